"""The imperative shell of tierstream: everything that touches the outside world. The
decisions are made by the pure core in :mod:`online_models`.

Rooms (the map, with what each may import, is in docs/architecture.md):

- :mod:`consumer.service` — the always-on service: what ``tierstream run`` executes;
- :mod:`consumer.tools` — the operator's tools: replay, snapshot, inspect, config view;
- :mod:`consumer.demo` — the embedded demo and the synthetic data it runs on;
- :mod:`consumer.commands` — one module per sub-command; :mod:`consumer.cli` assembles them.
"""
