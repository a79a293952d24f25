"""The pure core of tierstream: per-user features, scoring, tier policy, tier changes.

Nothing here performs I/O or imports Kafka, Redis or Prometheus code, so the same
functions run in a unit test, a replay and the live service, and give the same answers.

Numpy's BLAS runs on one thread unless the environment says otherwise (set here, before
numpy is first imported): the models' matrix products are small (a batch's vectors, a
version's labels), where BLAS threads cost more than they save, above all when the
instances, Kafka and Redis already share the cores; and a product's rounding depends
on how many threads split it, so one thread gives the same numbers on every machine.
The service scales by instances, one per core.

>>> import os
>>> "OPENBLAS_NUM_THREADS" in os.environ
True
"""

import os as _os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_name, "1")
