"""Tests against a real Redis Cluster of six redis-server processes the tests start (and
Sentinel): `make test-cluster`."""
