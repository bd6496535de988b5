"""ichnet-train / ichnet-eval end to end on tiny synthetic cases, export, compare, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from ichnet_core.models.weights import build_model, load_weights
from training.cli import EXIT_OK, EXIT_USAGE, eval_main, train_main
from training.config import load_config
from training.data.splits import Split, synthetic_seeds
from training.export import MAX_WEIGHTS_BYTES

from .test_trainer import tiny_config


@pytest.fixture
def config_file(tmp_path: Path, tiny_overrides: dict[str, Any]) -> Path:
    config = tiny_config(tmp_path, tiny_overrides)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    return path


def test_train_eval_and_export(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_main(["--config", str(config_file)]) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_completed"] == 1 and summary["best_checkpoint"]

    assert eval_main(["--config", str(config_file), "--split", "test"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "## Table 2: classification" in out and "## Table 3: segmentation" in out
    report = tmp_path / "run" / "eval-test"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_cases"] == 2
    assert (report / "tables.md").is_file()
    # How well the model fits its own training series: the first seeds of the training block.
    fit = tmp_path / "fit"
    train_split = ["--split", "train", "--cases", "1", "--bootstrap", "0", "--out", str(fit)]
    assert eval_main(["--config", str(config_file), *train_split]) == EXIT_OK
    capsys.readouterr()
    rows = (fit / "cases.csv").read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == [
        f"synthetic/{synthetic_seeds(Split.TRAIN, 1)[0]}"
    ]

    weights = tmp_path / "exported.pt"
    checkpoint = summary["best_checkpoint"]
    evaluation = str(report / "metrics.json")
    export = ["export", "--checkpoint", checkpoint, "--out", str(weights), "--version", "0.0.1+t"]
    code = train_main([*export, "--evaluation", evaluation])
    assert code == EXIT_OK
    exported = json.loads(capsys.readouterr().out)
    entry = exported["manifest_files_entry"]["exported.pt"]
    assert entry["model_name"] == "ichnet" and entry["version"] == "0.0.1+t"
    assert entry["sha256"] == exported["sha256"]
    assert 0 < exported["size_bytes"] <= MAX_WEIGHTS_BYTES
    loaded = load_weights(weights, expected_sha256=exported["sha256"])
    assert loaded.metadata["evaluation"]["n_cases"] == 2
    assert loaded.state_dict["encoder.stem.0.weight"].dtype == torch.float16
    model = build_model(loaded)
    assert model(torch.rand(1, 2, 3, 32, 32)).seg_logits is not None

    # The exported weights evaluate like the checkpoint (fp16 rounding aside).
    assert eval_main(["--config", str(config_file), "--weights", str(weights)]) == EXIT_OK
    assert "Table 2" in capsys.readouterr().out


def test_config_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: -1\n  batchsize: 2\n", encoding="utf-8")
    assert train_main(["--config", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "optim.lr: input should be greater than 0, got -1" in err
    assert "optim.batchsize: unknown key" in err
    path.write_text("data:\n  synthetic: null\n", encoding="utf-8")
    assert train_main(["--config", str(path)]) == EXIT_USAGE
    assert "no training cases" in capsys.readouterr().err


def test_compare_writes_the_results_table(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compare = tmp_path / "compare.yaml"
    results = tmp_path / "results.md"
    compare.write_text(
        yaml.safe_dump(
            {
                "base": config_file.name,
                "output_dir": str(tmp_path / "compare"),
                "results_md": str(results),
                "runs": [
                    {
                        "name": "ICHNet-no-att",
                        "model": {
                            "name": "ichnet_no_att",
                            "overrides": load_config(config_file).model.overrides,
                        },
                    },
                    {
                        "name": "ResNet18-2D",
                        "model": {"name": "resnet2d", "overrides": {"width": 2, "input_size": 32}},
                    },
                    {
                        "name": "UNet3D",
                        "model": {
                            "name": "unet3d",
                            "overrides": {"widths": [2, 4], "input_size": 32},
                        },
                    },
                ],
            }
        ),
        encoding="utf-8",
    )
    assert train_main(["compare", "--config", str(compare), "--max-steps", "1"]) == EXIT_OK
    text = results.read_text()
    assert "| ICHNet-no-att | `ichnet_no_att` |" in text
    assert "(max of slices)" in text  # the 2-D ResNet's subject level is derived
    unet_row = next(line for line in text.splitlines() if line.startswith("| UNet3D"))
    assert unet_row.count("n/a") >= 4  # no classification outputs
    assert (tmp_path / "compare" / "UNet3D" / "eval-test" / "metrics.json").is_file()
