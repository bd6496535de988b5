"""Case-level bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from training.bootstrap import case_bootstrap
from training.metrics import roc_auc


def test_interval_of_a_mean_covers_it_and_narrows_with_more_cases() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.8, 0.1, 16), rng.normal(0.8, 0.1, 256)
    a = case_bootstrap(lambda idx: float(small[idx].mean()), small.size)
    b = case_bootstrap(lambda idx: float(large[idx].mean()), large.size)
    assert a is not None and b is not None
    assert a.low < small.mean() < a.high and b.low < large.mean() < b.high
    assert (b.high - b.low) < (a.high - a.low) / 2
    # The standard error of a mean of 256 draws of sd 0.1 is 0.00625: 95 % is about +-0.012.
    assert (b.high - b.low) == pytest.approx(2 * 1.96 * 0.1 / 16, rel=0.25)


def test_undefined_replicates_are_left_out_or_give_no_interval() -> None:
    truth = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    score = np.linspace(1, 0, truth.size)

    def auc(idx: np.ndarray) -> float | None:
        return roc_auc(truth[idx], score[idx])

    interval = case_bootstrap(auc, truth.size, replicates=200)
    assert interval is not None and interval.replicates < 200 and interval.low == 1.0
    never = case_bootstrap(lambda idx: None, 10, replicates=50)
    assert never is None and case_bootstrap(auc, 0) is None
    with pytest.raises(ValueError, match="level"):
        case_bootstrap(auc, 8, level=1.0)
