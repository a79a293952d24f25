"""Numpy's BLAS on one thread in every process of the project, unless the environment
says otherwise (online_models/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.support import REPO

SHOW = (
    "import consumer.cli, numpy, os; "
    "print(os.environ.get('OPENBLAS_NUM_THREADS'), os.environ.get('OMP_NUM_THREADS'))"
)


@pytest.mark.parametrize(
    ("given", "want"), [(None, "1 1"), ("2", "2 1")], ids=["default", "operator's choice"]
)
def test_the_service_starts_numpy_with_one_blas_thread(given: str | None, want: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    done = subprocess.run(
        [sys.executable, "-c", SHOW], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == want.split()
