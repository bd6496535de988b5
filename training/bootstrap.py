"""Case-level bootstrap confidence intervals for the evaluation's headline figures.

Cases, not slices or voxels, are the independent units: slices of one series share a patient,
a scanner and a bleed. Every replicate therefore draws cases with replacement and recomputes the
statistic from all that those cases contribute (a cluster bootstrap); the interval is the
percentile interval of the replicates. A replicate where the statistic is undefined (an AUC
drawn without a positive case) is left out; when more than half are undefined no interval is
given, since it would describe an unrepresentative subset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

DEFAULT_REPLICATES: Final[int] = 1000
DEFAULT_LEVEL: Final[float] = 0.95
#: Fixed, so a report's intervals are reproducible.
DEFAULT_SEED: Final[int] = 20261204


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval."""

    low: float
    high: float
    replicates: int

    def to_dict(self) -> dict[str, float | int]:
        return {"low": self.low, "high": self.high, "replicates": self.replicates}


def case_bootstrap(
    statistic: Callable[[np.ndarray], float | None],
    n_cases: int,
    *,
    replicates: int = DEFAULT_REPLICATES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> Interval | None:
    """Percentile interval of ``statistic(case_indices)`` over resampled cases.

    Parameters
    ----------
    statistic:
        Computes the figure from the cases at the given indices (repeats allowed); ``None``
        where it is undefined for that draw.
    n_cases:
        How many cases there are to draw from.
    replicates, level, seed:
        Bootstrap size, interval coverage and the random seed.

    Returns
    -------
    Interval | None
        ``None`` when there are no cases or more than half of the replicates are undefined.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_cases < 1:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(replicates):
        value = statistic(rng.integers(0, n_cases, size=n_cases))
        if value is not None and np.isfinite(value):
            values.append(float(value))
    if len(values) * 2 < replicates:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return Interval(float(low), float(high), len(values))
