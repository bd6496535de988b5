"""A tiny training run on tiny synthetic cases: checkpoint, resume, logs, curves."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training import device
from training.checkpoint import CheckpointError, load_checkpoint
from training.config import TrainConfig, config_hash, parse_config
from training.trainer import Trainer


def tiny_config(tmp_path: Path, tiny_overrides: dict[str, Any], **changes: Any) -> TrainConfig:
    """Two 64x64 synthetic training cases, one validation case, a model of a few k parameters."""
    data: dict[str, Any] = {
        "seed": 3,
        "output_dir": str(tmp_path / "run"),
        "device": "cpu",
        "model": {"name": "ichnet", "overrides": dict(tiny_overrides)},
        "data": {
            "slices_per_sample": 4,
            "cache_dir": str(tmp_path / "cache"),
            "synthetic": {
                "train_cases": 2,
                "val_cases": 1,
                "test_cases": 2,
                "generator": {"rows": 64, "columns": 64},
            },
        },
        "augment": {"shift_px": 2},
        "optim": {"lr": 1e-3, "batch_size": 1, "epochs": 1},
        "logging": {"log_every_steps": 1, "progress_bar": False, "tensorboard": "off"},
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    return parse_config(data)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_checkpoint_resume_and_logs(tmp_path: Path, tiny_overrides: dict[str, Any]) -> None:
    config = tiny_config(tmp_path, tiny_overrides)
    summary = Trainer(config).fit()
    run = tmp_path / "run"
    assert summary.epochs_completed == 1 and summary.steps == 2
    last = run / "checkpoints" / "last.pt"
    assert last.is_file() and (run / "checkpoints" / "best.pt").is_file()
    payload = load_checkpoint(last)
    assert payload["epoch"] == 1 and payload["step"] == 2
    assert payload["config_hash"] == config_hash(config)
    assert {"model", "optimizer", "scaler", "rng", "loss_weighting"} <= set(payload)

    epochs = _rows(run / "metrics.csv")
    assert len(epochs) == 1 and epochs[0]["epoch"] == "1"
    assert float(epochs[0]["train_loss"]) > 0
    assert float(epochs[0]["val_loss"]) > 0  # one validation case: AUCs undefined, loss not
    assert all(float(epochs[0][f"weight_{t}"]) > 0 for t in ("seg", "slice_any", "subject_any"))
    assert [row["step"] for row in _rows(run / "steps.csv")] == ["1", "2"]
    assert (run / "curves_loss.png").is_file() and (run / "curves_validation.png").is_file()
    assert (run / "config.yaml").is_file()

    # Resume with more epochs: continues at epoch 1, step 2, and appends to the logs.
    longer = tiny_config(tmp_path, tiny_overrides, optim={"lr": 1e-3, "batch_size": 1, "epochs": 2})
    assert config_hash(longer) == config_hash(config)  # epochs do not change the hash
    resumed = Trainer(longer)
    assert (resumed.epoch, resumed.step) == (1, 2)
    summary = resumed.fit()
    assert summary.epochs_completed == 2 and summary.steps == 4
    assert [row["epoch"] for row in _rows(run / "metrics.csv")] == ["1", "2"]

    # The resumed run ends exactly where an uninterrupted one does.
    straight = tiny_config(
        tmp_path,
        tiny_overrides,
        output_dir=str(tmp_path / "straight"),
        optim={"lr": 1e-3, "batch_size": 1, "epochs": 2},
    )
    Trainer(straight).fit()
    a = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_resume_refuses_a_changed_config(tmp_path: Path, tiny_overrides: dict[str, Any]) -> None:
    Trainer(tiny_config(tmp_path, tiny_overrides), max_steps=1).fit()
    changed = tiny_config(
        tmp_path, tiny_overrides, optim={"lr": 5e-4, "batch_size": 1, "epochs": 1}
    )
    with pytest.raises(CheckpointError, match="config hash"):
        Trainer(changed)
    # Without resuming, the same folder can start over.
    Trainer(changed, resume=False, max_steps=1)


def test_max_steps_stops_inside_an_epoch(tmp_path: Path, tiny_overrides: dict[str, Any]) -> None:
    summary = Trainer(tiny_config(tmp_path, tiny_overrides), max_steps=1).fit()
    assert summary.steps == 1 and summary.epochs_completed == 0
    assert load_checkpoint(summary.last_checkpoint)["epoch"] == 0
    assert load_checkpoint(summary.last_checkpoint)["batches_in_epoch"] == 1


def test_stopped_and_resumed_inside_epochs_equals_one_straight_run(
    tmp_path: Path, tiny_overrides: dict[str, Any]
) -> None:
    """Exact resume: stops inside epochs, with crops and whole-slice batches, change nothing."""
    changes: dict[str, Any] = {
        "model": {"name": "ichnet", "overrides": {**tiny_overrides, "compartments": True}},
        "optim": {"lr": 1e-3, "batch_size": 1, "epochs": 2},
    }
    cropped = {"crop_size": 16, "whole_slice_fraction": 0.5}

    def config(name: str) -> TrainConfig:
        base = tiny_config(tmp_path, tiny_overrides, output_dir=str(tmp_path / name), **changes)
        data = base.data.model_copy(update=cropped)
        return base.model_copy(update={"data": data})

    Trainer(config("straight")).fit()
    for budget in (1, 2, None):  # stops after step 1 (epoch 1) and step 3 (epoch 2)
        Trainer(config("stopped"), max_steps=budget).fit()
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert (a["step"], a["epoch"]) == (b["step"], b["epoch"]) == (4, 2)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["step"] for r in _rows(tmp_path / "stopped" / "steps.csv")] == ["1", "2", "3", "4"]


def test_init_from_adopts_a_committed_checkpoint_unless_the_run_is_further(
    tmp_path: Path, tiny_overrides: dict[str, Any]
) -> None:
    Trainer(tiny_config(tmp_path, tiny_overrides), max_steps=1).fit()
    committed = tmp_path / "committed.pt"
    (tmp_path / "run" / "checkpoints" / "last.pt").rename(committed)
    elsewhere = tiny_config(tmp_path, tiny_overrides, output_dir=str(tmp_path / "other"))
    resumed = Trainer(elsewhere, init_from=committed)
    assert resumed.step == 1
    resumed.fit()
    again = Trainer(elsewhere, init_from=committed)  # the folder's own checkpoint is further
    assert again.step == 2
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        Trainer(elsewhere, init_from=tmp_path / "missing.pt")


def test_sampler_skips_what_a_resumed_run_did_and_crops_whole_batches() -> None:
    from training.sampling import EpochSampler

    sampler = EpochSampler(10, seed=1, batch_size=2, whole_slice_fraction=0.5)
    sampler.set_epoch(3)
    full = list(sampler)
    assert sorted(index for _, index, _ in full) == list(range(10))
    for position in range(0, 10, 2):
        assert full[position][2] == full[position + 1][2]  # one crop decision per batch
    assert {crop for _, _, crop in full} == {True, False}
    sampler.set_epoch(3, skip=4)
    assert list(sampler) == full[4:] and len(sampler) == 6


def test_validation_checks_real_normal_series_and_logs_their_figures(
    tmp_path: Path, tiny_overrides: dict[str, Any]
) -> None:
    """``validation.real_normal_series``: logged per validation, equal to a fresh check of the
    saved model; a missing folder is skipped; the setting leaves the config hash alone."""
    from ichnet_core.synthetic import SyntheticConfig, generate_case, write_series
    from training.real_ct import normal_ct_figures, read_series
    from training.trainer import load_trained_model

    normal = tmp_path / "normal"
    write_series(generate_case(5, SyntheticConfig(rows=64, columns=64), hemorrhage=False), normal)
    plain = tiny_config(tmp_path, tiny_overrides)
    config = tiny_config(
        tmp_path,
        tiny_overrides,
        validation={"real_normal_series": [str(normal), str(tmp_path / "absent")]},
    )
    assert config_hash(config) == config_hash(plain)
    Trainer(config).fit()
    row = _rows(tmp_path / "run" / "metrics.csv")[0]
    model, grid, _ = load_trained_model(
        tmp_path / "run" / "checkpoints" / "last.pt", torch.device("cpu")
    )
    expected = normal_ct_figures(model, grid, read_series(normal))
    assert float(row["val_real_normal_any"]) == pytest.approx(expected["any"], abs=1e-5)
    assert float(row["val_real_normal_false_ml"]) == pytest.approx(
        expected["false_hemorrhage_ml"], rel=1e-4, abs=1e-4
    )
    assert 0.0 < expected["any"] < 1.0 and expected["false_hemorrhage_ml"] >= 0.0


def test_metrics_csv_of_an_older_version_is_extended_not_refused(tmp_path: Path) -> None:
    """A run continued over sessions: columns appended by a newer version are added in place."""
    from training.runlog import EPOCH_COLUMNS, CsvLog

    path = tmp_path / "metrics.csv"
    old = EPOCH_COLUMNS[:-2]
    CsvLog(path, old).write({"epoch": 1, "step": 10, "train_loss": 0.5})
    log = CsvLog(path, EPOCH_COLUMNS)
    log.write({"epoch": 2, "step": 20, "val_real_normal_any": 0.25})
    rows = _rows(path)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["train_loss"] == "0.5" and rows[0]["val_real_normal_any"] == ""
    assert rows[1]["val_real_normal_any"] == "0.25"
    with pytest.raises(ValueError, match="use a new output_dir"):
        CsvLog(path, ("epoch", "other"))


def test_moving_average_is_resumed_exactly_and_is_what_is_evaluated(
    tmp_path: Path, tiny_overrides: dict[str, Any]
) -> None:
    """``optim.ema_decay``: kept in the checkpoint, resumed exactly, judged by evaluation and
    export; switching it on leaves the config hash (and so a running run) alone."""
    from training.checkpoint import trained_weights
    from training.trainer import load_trained_model

    optim = {"lr": 1e-2, "batch_size": 1, "epochs": 2, "ema_decay": 0.5}
    config = tiny_config(tmp_path, tiny_overrides, optim=optim)
    assert config_hash(config) == config_hash(
        tiny_config(tmp_path, tiny_overrides, optim={**optim, "ema_decay": None})
    )
    Trainer(config, max_steps=3).fit()  # stopped inside the second epoch
    Trainer(config).fit()
    straight = tiny_config(
        tmp_path, tiny_overrides, optim=optim, output_dir=str(tmp_path / "straight")
    )
    Trainer(straight).fit()
    resumed = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    uninterrupted = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    average, raw = trained_weights(resumed), resumed["model"]
    assert set(average) == set(raw)
    for key, value in trained_weights(uninterrupted).items():
        torch.testing.assert_close(average[key], value, msg=key)
    moved = [k for k in raw if raw[k].is_floating_point() and not torch.equal(raw[k], average[k])]
    assert moved, "the average must differ from the last weights"
    model, _, _ = load_trained_model(
        tmp_path / "run" / "checkpoints" / "last.pt", torch.device("cpu")
    )
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, average[key], msg=key)


def test_warm_start_takes_the_matching_weights_and_starts_a_new_run(
    tmp_path: Path, tiny_overrides: dict[str, Any]
) -> None:
    """``--warm-start``: a changed architecture (here the classification embedding) keeps the
    trained layers and the learned loss weights; new layers keep their initialisation; step and
    optimiser start afresh; a resume of the new run ignores the warm start."""
    from training.checkpoint import trained_weights

    Trainer(tiny_config(tmp_path, tiny_overrides), max_steps=2).fit()
    first = tmp_path / "first.pt"
    (tmp_path / "run" / "checkpoints" / "last.pt").rename(first)
    changed = tiny_config(
        tmp_path,
        {**tiny_overrides, "cls_embedding": True},
        output_dir=str(tmp_path / "second"),
    )
    assert config_hash(changed) != load_checkpoint(first)["config_hash"]
    trainer = Trainer(changed, warm_start=first, max_steps=1)
    assert trainer.step == 0
    assert trainer.warm_started_from == {"checkpoint": str(first), "step": 2}
    own, old = trainer.model.state_dict(), trained_weights(load_checkpoint(first))
    for key, value in old.items():
        torch.testing.assert_close(own[key], value, msg=key)
    new = {key for key in own if key not in old}
    assert new and all(key.startswith("classifier.embedding.") for key in new)
    learned = load_checkpoint(first)["loss_weighting"]["log_variances"]
    assert learned.abs().max() > 0  # two steps moved them off their start
    torch.testing.assert_close(trainer.weighting.log_variances.detach(), learned)
    trainer.fit()
    resumed = Trainer(changed, warm_start=tmp_path / "missing.pt")  # resumes; no warm start
    assert resumed.step == 1
    assert resumed.warm_started_from == {"checkpoint": str(first), "step": 2}
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        Trainer(changed, resume=False, warm_start=tmp_path / "missing.pt")


def test_a_deeper_encoder_warm_started_computes_what_the_trained_one_did(
    tmp_path: Path, tiny_overrides: dict[str, Any]
) -> None:
    """``--warm-start`` into more residual blocks per level: the new blocks start as the
    identity, so the deeper network's outputs equal the trained network's (capacity is added
    without losing the run); a later step then moves them."""
    from training.checkpoint import trained_weights

    Trainer(tiny_config(tmp_path, tiny_overrides), max_steps=2).fit()
    first = tmp_path / "first.pt"
    (tmp_path / "run" / "checkpoints" / "last.pt").rename(first)
    deeper = tiny_config(
        tmp_path,
        {**tiny_overrides, "blocks_per_level": (1, 1, 2, 2)},
        output_dir=str(tmp_path / "deeper"),
    )
    trainer = Trainer(deeper, warm_start=first, max_steps=1)
    old = Trainer(tiny_config(tmp_path, tiny_overrides, output_dir=str(tmp_path / "old")))
    old.model.load_state_dict(trained_weights(load_checkpoint(first)))
    new_keys = set(trainer.model.state_dict()) - set(old.model.state_dict())
    assert new_keys and all(
        k.startswith(("encoder.levels.2.1.", "encoder.levels.3.1.")) for k in new_keys
    )
    x = torch.rand(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    old.model.eval()
    trainer.model.eval()
    with torch.no_grad():
        expected, got = old.model(x), trainer.model(x)
    for name, a, b in zip(expected._fields, expected, got, strict=True):
        if a is not None:
            torch.testing.assert_close(b, a, msg=name)
    trainer.fit()
    moved = trainer.model.state_dict()["encoder.levels.3.1.bn2.weight"]
    assert moved.abs().max() > 0


def test_cpu_bf16_trains_under_bfloat16_and_validates_in_float32(
    tmp_path: Path, tiny_overrides: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``optim.cpu_bf16``: the step runs under bfloat16 autocast, validation at the node's float32
    precision, and the run keeps the hash of the float32 run, so a running run can switch. Run as
    on a CPU with bfloat16 instructions on every machine (the tiny model's emulated steps are
    quick); what happens without them is tests/training/test_device.py's."""
    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: True)
    plain = tiny_config(tmp_path, tiny_overrides)
    config = tiny_config(
        tmp_path, tiny_overrides, optim={"lr": 1e-3, "batch_size": 1, "epochs": 1, "cpu_bf16": True}
    )
    assert config_hash(config) == config_hash(plain)
    trainer = Trainer(config)
    assert (trainer.amp_dtype, trainer.eval_dtype) == (torch.bfloat16, None)
    seen: list[torch.dtype] = []
    first_conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    hook = first_conv.register_forward_hook(
        lambda _module, _inputs, output: seen.append(output.dtype)
    )
    summary = trainer.fit()
    hook.remove()
    assert summary.steps == 2
    # Two training steps under autocast, then validation without it.
    assert (
        seen[:2] == [torch.bfloat16, torch.bfloat16]
        and seen[2:]
        and set(seen[2:]) == {torch.float32}
    )
    [epoch] = _rows(tmp_path / "run" / "metrics.csv")
    assert np.isfinite(float(epoch["train_loss"])) and float(epoch["val_loss"]) > 0


def test_cpu_channels_last_trains_resumes_and_keeps_the_hash(
    tmp_path: Path, tiny_overrides: dict[str, Any]
) -> None:
    """``optim.cpu_channels_last``: the network trains in channels-last layout, keeps the hash
    of the default run (a running run can switch), and an interrupted run resumes exactly."""
    optim = {"lr": 1e-3, "batch_size": 1, "epochs": 2, "cpu_channels_last": True}
    config = tiny_config(tmp_path, tiny_overrides, optim=optim)
    assert config_hash(config) == config_hash(tiny_config(tmp_path, tiny_overrides))
    trainer = Trainer(config, max_steps=3)
    convs = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    trainer.fit()
    resumed = Trainer(config)
    assert resumed.step == 3
    summary = resumed.fit()
    assert summary.steps == 4
    assert all(
        np.isfinite(float(row["train_loss"])) for row in _rows(tmp_path / "run" / "metrics.csv")
    )
    straight = tiny_config(tmp_path, tiny_overrides, output_dir=str(tmp_path / "s"), optim=optim)
    Trainer(straight).fit()
    a = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "s" / "checkpoints" / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_average_of_checkpoints_is_their_mean_exports_and_never_resumes(
    tmp_path: Path, tiny_overrides: dict[str, Any]
) -> None:
    """``ichnet-train average``: the mean of the moving averages of two checkpoints of one run
    (integer buffers from the newest), usable by evaluation and export (which records the
    steps), refused as a run to resume and when the configs differ."""
    from ichnet_core.models.weights import load_weights
    from training.checkpoint import AVERAGED_FROM, trained_weights
    from training.cli import train_main
    from training.export import export_checkpoint
    from training.trainer import load_trained_model

    optim = {"lr": 1e-2, "batch_size": 1, "epochs": 2, "ema_decay": 0.5}
    config = tiny_config(tmp_path, tiny_overrides, optim=optim)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    Trainer(config, max_steps=2).fit()
    early = tmp_path / "early.pt"
    early.write_bytes(last.read_bytes())
    Trainer(config).fit()
    out = tmp_path / "avg.pt"
    assert train_main(["average", str(last), str(early), "--out", str(out)]) == 0
    averaged = load_checkpoint(out)
    assert [entry["step"] for entry in averaged[AVERAGED_FROM]] == [2, 4]
    first, second = (trained_weights(load_checkpoint(path)) for path in (early, last))
    mean = trained_weights(averaged)
    assert set(mean) == set(second)
    for key, value in mean.items():
        expected = (first[key] + second[key]) / 2 if value.is_floating_point() else second[key]
        torch.testing.assert_close(value, expected, msg=key)
    assert any(not torch.equal(first[k], second[k]) for k in first if first[k].is_floating_point())
    model, _, _ = load_trained_model(out, torch.device("cpu"))
    torch.testing.assert_close(model.state_dict(), mean)
    exported = export_checkpoint(
        out,
        tmp_path / "avg_weights.pt",
        version="0.0.1+test",
        trained_on="tiny",
        description="test",
    )
    assert load_weights(exported.path).metadata[AVERAGED_FROM] == [2, 4]

    elsewhere = tiny_config(tmp_path, tiny_overrides, optim=optim, output_dir=str(tmp_path / "b"))
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    (tmp_path / "b" / "checkpoints" / "last.pt").write_bytes(out.read_bytes())
    with pytest.raises(CheckpointError, match="made from other checkpoints"):
        Trainer(elsewhere)
    Trainer(
        tiny_config(tmp_path, tiny_overrides, output_dir=str(tmp_path / "c")), max_steps=1
    ).fit()
    other = tmp_path / "c" / "checkpoints" / "last.pt"
    assert train_main(["average", str(early), str(other), "--out", str(tmp_path / "x.pt")]) == 1
    assert train_main(["average", str(early), "--out", str(tmp_path / "y.pt")]) == 1
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()
