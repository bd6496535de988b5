"""How a compare config turns into the training config of each run."""

from __future__ import annotations

from pathlib import Path

from ichnet_core.imaging.model_grid import ModelGrid
from training.compare import load_compare_config, run_config
from training.config import parse_compare_config
from training.networks import build_network, grid_of

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


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


def test_the_diagnostic_resolution_comparison_runs_every_model_on_one_grid() -> None:
    """compare_diag.yaml (issue 8 item 6): ablations and baselines all see 1.0 mm pixels on a
    256 grid, at one budget, as the shipped model does."""
    compare, base = load_compare_config(CONFIGS / "compare_diag.yaml")
    grids, budgets = set(), set()
    for run in compare.runs:
        config = run_config(compare, base, run)
        grids.add(grid_of(build_network(config.model)))
        budgets.add((config.optim.epochs, config.data.crop_size, config.data.slices_per_sample))
    assert grids == {ModelGrid(256, 1.0)}
    assert budgets == {(6, 128, 8)}
    assert {run.model.name for run in compare.runs} == {
        "ichnet",
        "ichnet_cls",
        "ichnet_seg",
        "ichnet_no_att",
        "resnet2d",
        "resnet3d",
        "unet3d",
    }
