"""training.recalibrate: BatchNorm statistics recomputed on whole training series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ichnet_core.models.weights import load_weights
from training.checkpoint import BATCHNORM_FROM, CheckpointError, load_checkpoint, trained_weights
from training.cli import train_main
from training.data.build import build_split
from training.data.dataset import CaseDataset
from training.data.splits import Split
from training.export import export_checkpoint
from training.recalibrate import recalibrate_batchnorm
from training.step import forward_batch
from training.trainer import Trainer, load_trained_model

from .test_trainer import tiny_config


def test_recalibrated_statistics_are_the_mean_over_whole_training_series(
    tmp_path: Path, tiny_overrides: dict[str, Any]
) -> None:
    """The first BatchNorm layer's running mean becomes the mean, over the two whole training
    series, of its input's channel means; weights stay; export records it; never resumed."""
    optim = {"lr": 1e-2, "batch_size": 1, "epochs": 1, "ema_decay": 0.5}
    config = tiny_config(tmp_path, tiny_overrides, optim=optim)
    Trainer(config).fit()
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    out = tmp_path / "bn.pt"
    assert (
        train_main(["recalibrate-bn", "--checkpoint", str(last), "--cases", "2", "--out", str(out)])
        == 0
    )

    model, grid, _ = load_trained_model(last, torch.device("cpu"))
    first = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    seen: list[torch.Tensor] = []
    first.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].mean(dim=(0, 2, 3))))
    dataset = CaseDataset(build_split(config, Split.TRAIN), grid)
    with torch.no_grad():
        for index in range(2):
            forward_batch(model, [dataset.sample(index, crop=False)], torch.device("cpu"))
    expected = torch.stack(seen).mean(0)

    payload = load_checkpoint(out)
    assert payload[BATCHNORM_FROM] == {"checkpoint": str(last), "split": "train", "series": 2}
    original, recalibrated = trained_weights(load_checkpoint(last)), trained_weights(payload)
    name = next(k for k in recalibrated if k.endswith("running_mean"))
    torch.testing.assert_close(recalibrated[name], expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(original[name], expected)
    for key, value in original.items():
        if "running_" not in key and "num_batches" not in key:
            torch.testing.assert_close(recalibrated[key], value, msg=key)

    exported = export_checkpoint(
        out, tmp_path / "w.pt", version="0.0.1+test", trained_on="tiny", description="test"
    )
    assert load_weights(exported.path).metadata[BATCHNORM_FROM]["series"] == 2
    elsewhere = tmp_path / "b" / "checkpoints"
    elsewhere.mkdir(parents=True)
    (elsewhere / "last.pt").write_bytes(out.read_bytes())
    with pytest.raises(CheckpointError, match="made from other checkpoints"):
        Trainer(tiny_config(tmp_path, tiny_overrides, optim=optim, output_dir=str(tmp_path / "b")))
    assert (
        train_main(
            [
                "recalibrate-bn",
                "--checkpoint",
                str(last),
                "--cases",
                "3",
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "x.pt").exists()


def test_nothing_to_recalibrate_is_an_error() -> None:
    with pytest.raises(ValueError, match="no BatchNorm"):
        recalibrate_batchnorm(nn.Sequential(nn.ReLU()), [], torch.device("cpu"))
    model = nn.Sequential(nn.BatchNorm2d(2, momentum=0.3))
    with pytest.raises(ValueError, match="no series"):
        recalibrate_batchnorm(model, [], torch.device("cpu"))
    assert model[0].momentum == 0.3 and model.training
