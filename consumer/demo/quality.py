"""How well a labelling of users (tiers, segments) agrees with the generator's truth
(each synthetic user's latent customer type).

The contingency table counts users per (true type, label); the adjusted Rand index
(Hubert and Arabie, 1985) summarises it in one number: 1 for the same partition up to
renaming, about 0 for a labelling no better than chance, whatever the number of labels.

>>> truth = ["whale", "whale", "loyal", "loyal", "browser", "browser"]
>>> adjusted_rand_index(truth, ["a", "a", "b", "b", "c", "c"])
1.0
>>> round(adjusted_rand_index(truth, ["a", "b", "a", "b", "a", "b"]), 3)
-0.364
>>> t = Contingency.of(truth, ["vip", "vip", "vip", "casual", "casual", "casual"])
>>> t.rows, t.columns, t.counts
(['browser', 'loyal', 'whale'], ['casual', 'vip'], [[2, 0], [1, 1], [0, 2]])

References:
    Hubert, L. and Arabie, P. (1985). Comparing partitions. Journal of Classification 2.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Contingency", "adjusted_rand_index"]


@dataclass(frozen=True)
class Contingency:
    """Counts of items per (row label, column label)."""

    rows: list[str]
    columns: list[str]
    counts: list[list[int]]

    @classmethod
    def of(
        cls,
        row_labels: Sequence[str],
        column_labels: Sequence[str],
        *,
        rows: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> Contingency:
        """Cross-tabulate two labellings of the same items; ``rows``/``columns`` fix the
        order (default: sorted labels)."""
        if len(row_labels) != len(column_labels):
            raise ValueError("both labellings must label the same items")
        pairs = Counter(zip(row_labels, column_labels, strict=True))
        r = list(rows) if rows is not None else sorted(set(row_labels))
        c = list(columns) if columns is not None else sorted(set(column_labels))
        return cls(r, c, [[pairs[(a, b)] for b in c] for a in r])


def _pairs(n: int) -> float:
    return n * (n - 1) / 2


def adjusted_rand_index(labels_a: Sequence[str], labels_b: Sequence[str]) -> float:
    """The adjusted Rand index of two labellings of the same items."""
    table = Contingency.of(labels_a, labels_b)
    n = len(labels_a)
    total = _pairs(n)
    if total == 0:
        return 1.0
    index = sum(_pairs(x) for row in table.counts for x in row)
    rows = sum(_pairs(sum(row)) for row in table.counts)
    cols = sum(_pairs(sum(col)) for col in zip(*table.counts, strict=True))
    expected = rows * cols / total
    best = (rows + cols) / 2
    if best == expected:  # both labellings put everything in one group (or all apart)
        return 1.0
    return (index - expected) / (best - expected)
