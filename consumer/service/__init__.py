"""The always-on service: what ``tierstream run`` executes.

The loop (:mod:`~consumer.service.loop`) polls Kafka (:mod:`~consumer.service.kafka_io`),
runs each batch through the pure core (:mod:`~consumer.service.batch`) and the commit
protocol (:mod:`~consumer.service.checkpoint`) against the state store
(:mod:`~consumer.service.state_store`, keys in :mod:`~consumer.service.keys`), and
reports to Prometheus (:mod:`~consumer.service.metrics`). Settings, the tier config,
model files, records and dead letters are its vocabulary. Nothing here imports the
tools, the demo or the command line.
"""
