"""How a compare config turns into the training config of each run."""

from __future__ import annotations

from training.compare import run_config
from training.config import parse_compare_config


def test_compare_overrides_apply_to_every_run_and_run_overrides_win() -> None:
    compare = parse_compare_config(
        {
            "base": "base.yaml",
            "output_dir": "runs/cmp",
            "overrides": {"optim": {"epochs": 6, "lr": 0.002}, "validation": {"every_epochs": 3}},
            "runs": [
                {"name": "A", "model": {"name": "ichnet"}},
                {"name": "B", "model": {"name": "resnet2d"}, "overrides": {"optim": {"lr": 0.01}}},
            ],
        }
    )
    base = {"seed": 7, "optim": {"epochs": 20, "lr": 0.001, "batch_size": 4}}
    first, second = (run_config(compare, base, run) for run in compare.runs)
    assert (first.optim.epochs, first.optim.lr, first.optim.batch_size) == (6, 0.002, 4)
    assert first.validation.every_epochs == 3 and first.seed == 7
    assert (second.optim.epochs, second.optim.lr) == (6, 0.01)
    assert str(first.output_dir) == "runs/cmp/A" and second.model.name == "resnet2d"
    assert base["optim"]["epochs"] == 20  # the base dict is not modified
