"""The benchmarks (`make bench`, `make bench-models`, `make bench-memory`).

``online_models`` is imported before anything else of a bench: it sets numpy's BLAS to
one thread before numpy is first imported, so a bench's own replays, and the workers it
forks, compute the floats the ``tierstream`` commands compute (a product's rounding
depends on how many threads split it).
"""

import online_models  # noqa: F401
