"""The operator's tools: replay a file through the service's code path
(:mod:`~consumer.tools.replay`, reading :mod:`~consumer.tools.sources`), write everyone's
tier (:mod:`~consumer.tools.snapshot`), show one user (:mod:`~consumer.tools.user_view`),
show the settings (:mod:`~consumer.tools.config_view`), and a progress line for long runs
(:mod:`~consumer.tools.progress`). Built on :mod:`consumer.service`; never on the demo.
"""
