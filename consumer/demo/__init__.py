"""The embedded demo and the data it runs on: a synthetic event stream
(:mod:`~consumer.demo.synthetic`, with :mod:`~consumer.demo.customer_types` and
:mod:`~consumer.demo.malformed`), the demo pipeline (:mod:`~consumer.demo.pipeline`), its
terminal story and HTML report (:mod:`~consumer.demo.story`,
:mod:`~consumer.demo.report_page`, :mod:`~consumer.demo.charts`), and the agreement
figures (:mod:`~consumer.demo.quality`). The service never imports it.
"""
