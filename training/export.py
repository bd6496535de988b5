"""Ship a trained checkpoint as the package's weights file (fp16) plus its manifest entry.

The weights file format and its sha256-checked loader belong to ``ichnet_core.models.weights``;
this module only turns a training checkpoint into such a file and produces the entry that
``ichnet_core/models/weights/manifest.json`` must list for it (the manifest is edited by the
model package's owner, or by ``ichnet_core.models.weights.register_bundled_weights``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch

from ichnet_core.models import ICHNet, list_models
from ichnet_core.models.weights import load_weights, save_weights, sha256_of_bytes
from ichnet_core.operating_points import METADATA_KEY, OperatingPoints, OperatingPointsError
from training.checkpoint import AVERAGED_FROM, BATCHNORM_FROM, load_checkpoint, trained_weights
from training.config import TrainConfig
from training.networks import build_network

logger = logging.getLogger(__name__)

#: Largest weights file the package may bundle (PyPI wheels and the repository stay small).
MAX_WEIGHTS_BYTES: Final[int] = 25 * 1024 * 1024
#: Format tag of the file ``ichnet-train operating-points`` writes.
OPERATING_POINTS_FORMAT: Final[str] = "ichnet-operating-points/1"


@dataclass(frozen=True)
class ExportResult:
    """The written weights file and the manifest entry it needs."""

    path: Path
    sha256: str
    size_bytes: int
    manifest_entry: dict[str, Any]


def manifest_entry(sha256: str, model_name: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """The ``manifest.json`` ``files[<name>]`` entry of a weights file.

    Same keys as ``ichnet_core.models.weights.register_bundled_weights`` writes: sha256,
    model_name, version, trained_on, training_data, description.
    """
    return {
        "sha256": sha256,
        "model_name": model_name,
        "version": str(metadata["version"]),
        "trained_on": str(metadata["trained_on"]),
        "training_data": str(metadata["training_data"]),
        "description": str(metadata["description"]),
    }


def _evaluation_summary(metrics_json: Path) -> dict[str, Any]:
    data = json.loads(Path(metrics_json).read_text(encoding="utf-8"))
    subject = data["table2"]["subject"]["any"] or {}
    slices = data["table2"]["slice"]["any"] or {}
    return {
        "n_cases": data["n_cases"],
        "subject_auc_any": subject.get("auc"),
        "slice_auc_any": slices.get("auc"),
        "dice_hemorrhage": data["table3"]["hemorrhage"]["dice"],
        "dice_mean": data["table3"]["mean"]["dice"],
    }


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (ties operating points to the checkpoint they came from)."""
    return sha256_of_bytes(Path(path).read_bytes())


def read_operating_points(path: Path, checkpoint: Path) -> OperatingPoints:
    """The operating points of an ``ichnet-train operating-points`` file, for ``checkpoint``.

    Raises
    ------
    ValueError
        When the file is not such a file, holds malformed thresholds, or was computed from
        another checkpoint (thresholds only fit the very network they were chosen for).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read operating points {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != OPERATING_POINTS_FORMAT:
        raise ValueError(f"{path} is not an {OPERATING_POINTS_FORMAT!r} file")
    origin = data.get("checkpoint") or {}
    expected = file_sha256(checkpoint)
    if origin.get("sha256") != expected:
        raise ValueError(
            f"{path} was computed from checkpoint sha256 {origin.get('sha256')} "
            f"({origin.get('path')}), not from {checkpoint} (sha256 {expected}); "
            "run `ichnet-train operating-points` on this checkpoint"
        )
    try:
        return OperatingPoints.from_metadata({METADATA_KEY: data.get("operating_points")})
    except OperatingPointsError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _verify(path: Path, sha256: str) -> None:
    """Read the file back through the package loader (from a copy: a file in the bundled folder
    is only accepted once the manifest lists it)."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / path.name
        shutil.copyfile(path, copy)
        load_weights(copy, expected_sha256=sha256)


def export_checkpoint(
    checkpoint: Path,
    out: Path,
    *,
    version: str,
    trained_on: str,
    description: str,
    evaluation: Path | None = None,
    operating_points: Path | None = None,
    max_bytes: int = MAX_WEIGHTS_BYTES,
) -> ExportResult:
    """Write the model of ``checkpoint`` as a weights file at ``out``.

    Parameters
    ----------
    checkpoint:
        A training checkpoint (``runs/<name>/checkpoints/best.pt``).
    out:
        Destination weights file.
    version, trained_on, description:
        Provenance stored in the file (and in the manifest entry).
    evaluation:
        Optional ``metrics.json`` from ``ichnet-eval`` whose headline numbers are stored too.
    operating_points:
        Optional file of ``ichnet-train operating-points`` for this checkpoint; its thresholds
        are stored in the metadata (``operating_points``). Without it the weights fall back to
        0.5 for every output.
    max_bytes:
        Refuse files larger than this (the file is removed).

    Raises
    ------
    ValueError
        A baseline checkpoint (only ICHNet variants are shipped), a file over ``max_bytes``, or
        operating points of another checkpoint.
    """
    payload = load_checkpoint(checkpoint)
    config = TrainConfig.model_validate(payload["config"])
    name = config.model.name
    if name not in list_models():
        raise ValueError(f"{checkpoint}: model {name!r} is not an ICHNet variant {list_models()}")
    model = build_network(config.model)
    if not isinstance(model, ICHNet):
        raise ValueError(f"{checkpoint}: {name!r} did not build an ICHNet")
    model.load_state_dict(trained_weights(payload))
    metadata: dict[str, Any] = {
        "version": version,
        "trained_on": trained_on,
        # Machine-readable provenance the result objects rely on: any public dataset in the
        # training config means real patient images were seen.
        "training_data": "real" if config.data.datasets else "synthetic",
        "description": description,
        "training_config_hash": payload["config_hash"],
        "training_config": payload["config"],
        "epochs": payload["epoch"],
        "steps": payload["step"],
        "torch_version": torch.__version__,
    }
    if AVERAGED_FROM in payload:
        metadata[AVERAGED_FROM] = [int(entry["step"]) for entry in payload[AVERAGED_FROM]]
    if BATCHNORM_FROM in payload:
        metadata[BATCHNORM_FROM] = dict(payload[BATCHNORM_FROM])
    if evaluation is not None:
        metadata["evaluation"] = _evaluation_summary(evaluation)
    if operating_points is not None:
        metadata[METADATA_KEY] = read_operating_points(operating_points, checkpoint).to_metadata()
    else:
        logger.warning(
            "exporting %s without operating points: the weights will call every output present "
            "from 0.5 (pass --operating-points)",
            checkpoint,
        )
    sha256 = save_weights(model.float().eval(), Path(out), name=name, metadata=metadata)
    size = Path(out).stat().st_size
    if size > max_bytes:
        Path(out).unlink()
        raise ValueError(f"{out}: {size} bytes exceeds the bundling limit of {max_bytes} bytes")
    _verify(Path(out), sha256)
    entry = manifest_entry(sha256, name, metadata)
    logger.info("exported %s -> %s (%d bytes, sha256 %s)", checkpoint, out, size, sha256)
    return ExportResult(path=Path(out), sha256=sha256, size_bytes=size, manifest_entry=entry)
