"""The windows tests/bench/revenue_ceiling.py fits its stream-only reference on (what
docs/models.md quotes): its examples run in test_bench_examples.py,
and no window reads an order after T."""

from __future__ import annotations

from tests.bench import revenue_ceiling
from tests.bench.bench_models import ORDER_HOLDOUT_MS

DAY = 86_400_000


def test_the_windows_outcomes_end_by_t_and_reach_back_to_500_customers() -> None:
    # 700 customers, one a day; each buys again 100 days after its first order
    history = {
        f"u{i:03}": [(i * DAY, 10.0, "books"), ((i + 100) * DAY, 5.0 + i, "toys")]
        for i in range(700)
    }
    until = 800 * DAY
    windows = revenue_ceiling.earlier_windows(history, until, ["books", "toys"])
    first_before = until - ORDER_HOLDOUT_MS
    assert len(windows) == (first_before // DAY - 499) // 30 + 1
    for k, (x, y) in enumerate(windows):
        before = first_before - 30 * k * DAY
        known = [i for i in range(700) if i * DAY <= before]
        assert len(known) == len(y) >= 500
        # the outcome is the second order's amount when it falls in (before, before + holdout]
        expected = [
            5.0 + i if before < (i + 100) * DAY <= before + ORDER_HOLDOUT_MS else 0.0 for i in known
        ]
        assert y.tolist() == expected
        assert x[:, 0].tolist() == [2.0 if (i + 100) * DAY <= before else 1.0 for i in known]
