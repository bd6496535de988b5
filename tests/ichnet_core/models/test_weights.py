"""Weights files: round trip, sha256 checks, malformed files, the bundled default and its manifest."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from ichnet_core.models import weights as weights_module
from ichnet_core.models.ichnet import ICHNet
from ichnet_core.models.registry import create_model, model_config
from ichnet_core.models.weights import (
    MANIFEST_PATH,
    WEIGHTS_FORMAT,
    ModelWeights,
    WeightsError,
    build_model,
    default_weights_path,
    load_weights,
    register_bundled_weights,
    save_weights,
)

METADATA = {
    "version": "1.2.3",
    "trained_on": "unit-test noise",
    "training_data": "none",
    "description": "test weights",
}
MAX_BUNDLED_BYTES = 5 * 2**20


@pytest.fixture
def tiny_model(tiny_overrides: dict[str, Any]) -> ICHNet:
    model = create_model("ichnet", **tiny_overrides)
    # Non-trivial BatchNorm statistics, so the round trip covers buffers too.
    model.train()
    with torch.no_grad():
        model(torch.rand(1, 2, 3, 32, 32))
    return model.eval()


@pytest.fixture
def saved(tiny_model: ICHNet, tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "tiny.pt"
    return path, save_weights(tiny_model, path, name="ichnet", metadata=METADATA)


def test_round_trip(tiny_model: ICHNet, saved: tuple[Path, str]) -> None:
    path, sha256 = saved
    loaded = load_weights(path, expected_sha256=sha256.upper())
    assert loaded.sha256 == sha256 and loaded.path == path
    assert (loaded.model_name, loaded.version) == ("ichnet", "1.2.3")
    assert loaded.config == tiny_model.config
    assert loaded.trained_on == "unit-test noise" and loaded.description == "test weights"
    assert all(
        v.dtype == torch.float16 for v in loaded.state_dict.values() if v.is_floating_point()
    )
    rebuilt = build_model(loaded)
    assert not rebuilt.training
    assert all(p.dtype == torch.float32 for p in rebuilt.parameters())
    # The rebuilt network is the original with its weights rounded to float16.
    reference = ICHNet(tiny_model.config)
    reference.load_state_dict(
        {
            k: v.half().float() if v.is_floating_point() else v
            for k, v in tiny_model.state_dict().items()
        }
    )
    reference.eval()
    x = torch.rand(1, 3, 3, 32, 32)
    with torch.inference_mode():
        for a, b in zip(rebuilt(x), reference(x), strict=True):
            torch.testing.assert_close(a, b)


def test_same_model_gives_same_bytes(tiny_model: ICHNet, tmp_path: Path) -> None:
    first = save_weights(tiny_model, tmp_path / "a.pt", name="ichnet", metadata=METADATA)
    second = save_weights(tiny_model, tmp_path / "sub" / "b.pt", name="ichnet", metadata=METADATA)
    assert first == second
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "b.pt").read_bytes()


def test_sha_mismatch_raises(saved: tuple[Path, str]) -> None:
    path, sha256 = saved
    wrong = ("0" if sha256[0] != "0" else "1") + sha256[1:]
    with pytest.raises(WeightsError, match=f"has sha256 {sha256}, expected {wrong}"):
        load_weights(path, expected_sha256=wrong)


def test_invalid_expected_sha() -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        load_weights(None, expected_sha256="abc")


def test_unchecked_external_file_is_logged(
    saved: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    load_weights(saved[0])
    assert "integrity unchecked" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read weights file"),
        (b"not a zip archive at all", "cannot load weights file"),
        ({"format": "something-else/9"}, "has format 'something-else/9'"),
        ({"format": WEIGHTS_FORMAT, "model_name": "ichnet"}, "lacks the keys"),
        (argparse.Namespace(a=1), "cannot load weights file"),  # refused by weights_only
    ],
)
def test_malformed_files_raise(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(WeightsError, match=message):
        load_weights(path)


def test_state_dict_not_matching_config_raises(saved: tuple[Path, str]) -> None:
    loaded = load_weights(saved[0])
    other = ModelWeights(
        path=loaded.path,
        sha256=loaded.sha256,
        model_name=loaded.model_name,
        version=loaded.version,
        config=model_config("ichnet", widths=(4, 8, 8, 16), input_size=32, lstm_hidden=4),
        state_dict=loaded.state_dict,
        metadata=loaded.metadata,
    )
    with pytest.raises(WeightsError, match="do not fit their own config"):
        build_model(other)


def test_save_checks_metadata_and_range(tiny_model: ICHNet, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"lacks \['trained_on', 'training_data'\]"):
        save_weights(
            tiny_model,
            tmp_path / "m.pt",
            name="ichnet",
            metadata={"version": "1", "description": "d"},
        )
    with pytest.raises(ValueError, match="training_data must be one of"):
        save_weights(
            tiny_model,
            tmp_path / "m.pt",
            name="ichnet",
            metadata={**METADATA, "training_data": "phantoms"},
        )
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_weights(
            tiny_model, tmp_path / "m.pt", name="ichnet", metadata={**METADATA, "x": {1, 2}}
        )
    with torch.no_grad():
        next(tiny_model.parameters()).view(-1)[0] = 1e6
    with pytest.raises(ValueError, match=r"does not fit in torch\.float16"):
        save_weights(tiny_model, tmp_path / "m.pt", name="ichnet", metadata=METADATA)
    assert not (tmp_path / "m.pt").exists()


def test_bundled_default_passes_its_manifest() -> None:
    manifest = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    path = default_weights_path()
    entry = manifest["files"][path.name]
    loaded = load_weights()
    assert loaded.sha256 == entry["sha256"]
    assert loaded.model_name == entry["model_name"] == "ichnet"
    assert loaded.description == entry["description"]
    assert "not for clinical use" in loaded.description
    # The shipped weights were trained here on synthetic data only, and say so.
    assert loaded.training_data == entry["training_data"] == "synthetic"
    assert "synthetic" in loaded.trained_on
    assert path.stat().st_size < MAX_BUNDLED_BYTES
    # Naming the bundled file explicitly is checked against the manifest too.
    assert load_weights(path).sha256 == entry["sha256"]
    assert isinstance(build_model(loaded), ICHNet)


@pytest.fixture
def bundled_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the bundled folder that the loader treats as the package's own."""
    folder = tmp_path / "bundled"
    shutil.copytree(MANIFEST_PATH.parent, folder)
    monkeypatch.setattr(weights_module, "BUNDLED_WEIGHTS_DIR", folder.resolve())
    monkeypatch.setattr(weights_module, "MANIFEST_PATH", folder.resolve() / MANIFEST_PATH.name)
    return folder


def test_replaced_bundled_file_is_refused(
    bundled_dir: Path, tiny_model: ICHNet, tmp_path: Path
) -> None:
    default_name = default_weights_path().name
    sha256 = save_weights(tiny_model, bundled_dir / default_name, name="ichnet", metadata=METADATA)
    with pytest.raises(WeightsError, match="installation is damaged"):
        load_weights()
    # Even a caller vouching for the new file cannot bypass the manifest.
    with pytest.raises(WeightsError, match=r"manifest\.json expects"):
        load_weights(bundled_dir / default_name, expected_sha256=sha256)


def test_unlisted_file_in_bundled_folder_is_refused(bundled_dir: Path, tiny_model: ICHNet) -> None:
    save_weights(tiny_model, bundled_dir / "extra.pt", name="ichnet", metadata=METADATA)
    with pytest.raises(WeightsError, match="does not list it"):
        load_weights(bundled_dir / "extra.pt")


def test_register_bundled_weights_makes_new_default(bundled_dir: Path, tiny_model: ICHNet) -> None:
    sha256 = save_weights(tiny_model, bundled_dir / "trained.pt", name="ichnet", metadata=METADATA)
    register_bundled_weights(bundled_dir / "trained.pt")
    loaded = load_weights()
    assert loaded.path.name == "trained.pt" and loaded.sha256 == sha256
    manifest = json.loads((bundled_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["files"]["trained.pt"]["version"] == "1.2.3"
