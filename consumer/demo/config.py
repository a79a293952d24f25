"""What ``tierstream demo`` generates and where it writes: :class:`DemoConfig`.

Kept apart from the pipeline so that the command line can show these defaults without
loading the models.

>>> DemoConfig().users, DemoConfig(users=10).events
(5000, 200000)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from consumer.service.settings import DEFAULT_TIERS_FILE

__all__ = ["DemoConfig"]


@dataclass(frozen=True)
class DemoConfig:
    """What to generate and where to write. The defaults are ``make demo``'s."""

    users: int = 5_000
    events: int = 200_000
    seed: int = 42
    days: int = 180
    bad_fraction: float = 0.005
    out_dir: Path = Path("out")
    batch_size: int = 2000
    tiers_file: Path = DEFAULT_TIERS_FILE
    sample_size: int = 8
