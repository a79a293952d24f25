"""The pure core of tierstream: per-user features, scoring, tier policy, tier changes.

Nothing here performs I/O or imports Kafka, Redis or Prometheus code, so the same
functions run in a unit test, a replay and the live service, and give the same answers.
"""
