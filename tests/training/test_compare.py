"""How a compare config turns into the training config of each run; reuse of finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ichnet_core.imaging.model_grid import ModelGrid
from training.compare import (
    RUN_DATA,
    RUN_RECORD,
    data_fingerprint,
    finished_record,
    load_compare_config,
    report_dir,
    run_compare,
    run_config,
)
from training.config import TrainConfig, config_hash, parse_compare_config
from training.eval_report import write_report
from training.evaluate import CasePrediction, Evaluator
from training.networks import build_network, grid_of

from .conftest import make_phantom_case

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
    assert budgets == {(20, 128, 8)}
    assert {run.model.name for run in compare.runs} == {
        "ichnet",
        "ichnet_cls",
        "ichnet_seg",
        "ichnet_no_att",
        "resnet2d",
        "resnet3d",
        "unet3d",
    }


def test_the_committed_comparison_reports_match_the_current_configuration() -> None:
    """A change to cpu_diag.yaml (its base) must not silently invalidate the finished
    comparison runs, which cost hours each: run 11's 720 training series did until
    compare_diag pinned the 240 its reports were made on. Every committed report's config hash
    is the one its run has today (the data fingerprint is checked by ``finished_record``)."""
    compare, base = load_compare_config(CONFIGS / "compare_diag.yaml")
    records = {
        run.name: CONFIGS.parents[1] / report_dir(compare, run) / RUN_RECORD for run in compare.runs
    }
    committed = [run for run in compare.runs if records[run.name].is_file()]
    assert committed, "docs/results/compare_diag holds the finished runs' reports"
    for run in committed:
        record = json.loads(records[run.name].read_text(encoding="utf-8"))
        assert record["config_hash"] == config_hash(run_config(compare, base, run)), run.name


def _compare_files(tmp_path: Path) -> Path:
    """A two-run compare config (tiny synthetic split) with its reports in ``tmp_path``."""
    (tmp_path / "base.yaml").write_text(
        "data:\n  synthetic: {train_cases: 5, val_cases: 1, test_cases: 3}\n", encoding="utf-8"
    )
    path = tmp_path / "compare.yaml"
    path.write_text(
        f"base: base.yaml\noutput_dir: {tmp_path / 'runs'}\n"
        f"results_md: {tmp_path / 'table.md'}\nreports_dir: {tmp_path / 'reports'}\n"
        "overrides: {optim: {epochs: 2}, data: {synthetic: {train_cases: 2}}}\n"
        "runs:\n  - {name: A, model: {name: ichnet}}\n  - {name: B, model: {name: resnet2d}}\n",
        encoding="utf-8",
    )
    return path


def _record_run(
    out_dir: Path, config: TrainConfig, data: str, max_steps: int | None = None
) -> None:
    """The report a finished run leaves: metrics of one toy case and the run record."""
    case = make_phantom_case("toy/r")
    evaluator = Evaluator()
    evaluator.add(case, CasePrediction("toy/r", np.full(6, 0.9, np.float32), None, case.seg))
    write_report(evaluator.result(), out_dir, title="toy")
    record = {
        "config_hash": config_hash(config),
        "split": "test",
        "data": data,
        "max_steps": max_steps,
        "n_cases": 1,
        "model": config.model.name,
        "parameters": 1234,
        "train_minutes": 2.5,
        "checkpoint": "best.pt",
        "steps": 40,
    }
    (out_dir / RUN_RECORD).write_text(json.dumps(record), encoding="utf-8")


def test_a_finished_run_is_reused_only_when_its_record_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A comparison spans working sessions: runs with a matching report are neither trained
    nor evaluated again; a run whose configuration changed since is run again."""
    path = _compare_files(tmp_path)
    compare, base = load_compare_config(path)
    first, second = compare.runs
    config_a, config_b = (run_config(compare, base, run) for run in compare.runs)
    data = data_fingerprint(config_a, "test")
    assert data == data_fingerprint(config_b, "test")  # one data set, two models
    assert finished_record(report_dir(compare, first), config_a, "test") is None
    _record_run(report_dir(compare, first), config_a, data)
    changed = config_b.model_copy(update={"seed": 99})  # B's report is of another config
    _record_run(report_dir(compare, second), changed, data)
    assert finished_record(report_dir(compare, first), config_a, "test") is not None
    assert finished_record(report_dir(compare, second), config_b, "test") is None
    # Other data (here: more test cases; equally a changed generator) is never reused.
    synthetic = config_a.data.synthetic
    assert synthetic is not None
    more = synthetic.model_copy(update={"test_cases": 4})
    other = config_a.model_copy(
        update={"data": config_a.data.model_copy(update={"synthetic": more})}
    )
    assert data_fingerprint(other, "test") != data
    assert finished_record(report_dir(compare, first), other, "test") is None
    # Nor does a report of a run capped by --max-steps stand in for the full run, or back.
    assert finished_record(report_dir(compare, first), config_a, "test", max_steps=5) is None
    _record_run(report_dir(compare, first), config_a, data, max_steps=5)
    assert finished_record(report_dir(compare, first), config_a, "test") is None
    assert finished_record(report_dir(compare, first), config_a, "test", max_steps=5) is not None
    _record_run(report_dir(compare, first), config_a, data)

    trained: list[str] = []

    def train_and_evaluate(compare, run, config, max_steps):  # type: ignore[no-untyped-def]
        trained.append(run.name)
        _record_run(report_dir(compare, run), config, data_fingerprint(config, "test"), max_steps)
        return finished_record(report_dir(compare, run), config, "test", max_steps)

    monkeypatch.setattr("training.compare._train_and_evaluate", train_and_evaluate)
    table = run_compare(path).read_text(encoding="utf-8")
    assert trained == ["B"]
    rows = [line for line in table.splitlines() if "| 1,234 |" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| A", "| B"]
    assert all(row.endswith("| 1.000 | 1.000 | 0.00 | 2.5 |") for row in rows), rows
    assert "step 40" in table
    # The series the runs were trained on: the comparison's override, not the base's 5.
    assert "Training data: 2 synthetic cases" in table
    trained.clear()
    run_compare(path)
    assert trained == []  # B's new report matches now


def test_a_run_stopped_by_a_signal_is_not_evaluated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT/SIGTERM end the trainer with a checkpoint; the compare must stop there rather
    than evaluate the half-trained run and file its figures as the run's report."""
    path = _compare_files(tmp_path)
    compare, _ = load_compare_config(path)
    run = compare.runs[0]

    class SignalledTrainer:
        def __init__(self, config: TrainConfig, **_: object) -> None:
            self.stop_requested = False

        def fit(self) -> None:
            self.stop_requested = True  # as Trainer._request_stop does on a signal

    monkeypatch.setattr("training.compare.Trainer", SignalledTrainer)
    with pytest.raises(RuntimeError, match="stopped by a signal during run A"):
        run_compare(path)
    assert not report_dir(compare, run).exists()
    assert not (tmp_path / "table.md").exists()


def test_a_run_begun_on_other_data_is_set_aside_not_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config hash does not see the generator: after a label change the old, complete run
    must not be resumed and filed as made on the new data. Its folder is renamed aside and the
    run starts empty; a run begun on the same data keeps its checkpoint and resumes."""
    path = _compare_files(tmp_path)
    compare, base = load_compare_config(path)
    run = compare.runs[0]
    config = run_config(compare, base, run)
    run_dir = Path(config.output_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"trained on the old labels")
    (run_dir / RUN_DATA).write_text("0" * 64 + "\n", encoding="utf-8")
    seen: list[set[str]] = []

    class SignalledTrainer:
        def __init__(self, config: TrainConfig, **_: object) -> None:
            out = Path(config.output_dir)
            seen.append({p.relative_to(out).as_posix() for p in out.rglob("*")})
            self.stop_requested = True

        def fit(self) -> None:
            pass

    monkeypatch.setattr("training.compare.Trainer", SignalledTrainer)
    with pytest.raises(RuntimeError, match="stopped by a signal"):
        run_compare(path)
    assert seen == [{RUN_DATA}]  # an empty run: nothing of the old one resumed
    data = data_fingerprint(config, "test")
    assert (run_dir / RUN_DATA).read_text(encoding="utf-8").strip() == data
    (aside,) = tmp_path.joinpath("runs").glob("A.other-data-*")
    assert (aside / "checkpoints" / "last.pt").read_bytes() == b"trained on the old labels"
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"begun on this data")
    with pytest.raises(RuntimeError, match="stopped by a signal"):
        run_compare(path)
    assert seen[1] == {RUN_DATA, "checkpoints", "checkpoints/last.pt"}
