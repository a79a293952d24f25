"""A bench computes on one BLAS thread, as the `tierstream` commands do, so that its
replays and a command's replay of the same stream write the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS has one thread anyway")
def test_bench_models_runs_numpy_on_one_blas_thread() -> None:
    env = {k: v for k, v in os.environ.items() if k not in _THREADS}
    code = (
        "import tests.bench.bench_models, threadpoolctl;"
        "print(max(i['num_threads'] for i in threadpoolctl.threadpool_info()"
        " if i['user_api'] == 'blas'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "1"
