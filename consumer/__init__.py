"""The imperative shell of tierstream: Kafka, Redis, metrics, settings and the CLI.

Everything that touches the outside world lives here; the decisions are made by the pure
core in :mod:`online_models`.
"""
