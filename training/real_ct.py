"""Sanity check of weights on a real head CT without labels: ICH probability and brain volume.

No labelled patient data is available to this project; the one real head CT in the test data
(no acute hemorrhage) still tells whether a model trained on synthetic data transfers at all:
its subject-level ``any`` probability should be below 0.5 and its brain mask should have a
volume plausible for the part of the head the series covers. The overlay PNG shows a few slices
with the predicted brain (blue) and hemorrhage (red).

    python -m training.real_ct ../shared/data/real/head_ct_ge_tilted --out runs/real_ct
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pydicom
import torch
from PIL import Image
from pydicom.errors import InvalidDicomError

from ichnet_core.imaging.measure import label_volume_ml
from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.imaging.volume import Volume, build_volume
from ichnet_core.inference.pipeline import hemorrhage_volume_ml, run_pipeline
from ichnet_core.inference.staged import ChunkSink, NetworkOutput, to_sink
from ichnet_core.inference.torch_engine import TorchEngine
from ichnet_core.labels import BRAIN, CLASS_NAMES, HEMORRHAGE, SUBTYPES
from ichnet_core.models.ichnet import seg_probabilities
from ichnet_core.models.weights import load_weights
from ichnet_core.prediction import Prediction

#: Brain window of the overlay (0-80 HU) and how many slices it shows.
OVERLAY_WINDOW_HU: Final[tuple[float, float]] = (0.0, 80.0)
OVERLAY_SLICES: Final[int] = 6
BRAIN_RGB: Final[np.ndarray] = np.array([80, 150, 255], dtype=np.float32)
HEMORRHAGE_RGB: Final[np.ndarray] = np.array([255, 30, 30], dtype=np.float32)

logger = logging.getLogger(__name__)


def read_series(folder: Path) -> Volume:
    """The volume of the one CT series in ``folder`` (non-DICOM files are ignored)."""
    datasets = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            datasets.append(pydicom.dcmread(path))
        except (InvalidDicomError, OSError):
            continue
    return build_volume(datasets)


def brain_volume_ml(labels: np.ndarray, volume: Volume) -> float:
    """Predicted brain volume in mL (the one volume rule, ``ichnet_core.imaging.measure``)."""
    return label_volume_ml(labels, BRAIN, volume.voxel_volumes_ml())


def write_overlay(volume: Volume, prediction: Prediction, path: Path) -> None:
    """A row of evenly spaced slices, brain window, predicted classes tinted."""
    indices = np.linspace(0, volume.num_slices - 1, OVERLAY_SLICES).round().astype(int)
    low, high = OVERLAY_WINDOW_HU
    tiles = []
    for index in indices:
        grey = np.clip((volume.hu[index] - low) / (high - low), 0.0, 1.0) * 255.0
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        for label, colour, alpha in ((BRAIN, BRAIN_RGB, 0.25), (HEMORRHAGE, HEMORRHAGE_RGB, 0.6)):
            mask = prediction.labels[index] == label
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
        tiles.append(rgb.astype(np.uint8))
    Image.fromarray(np.concatenate(tiles, axis=1)).save(path)


def normal_ct_figures(model: torch.nn.Module, grid: ModelGrid, volume: Volume) -> dict[str, float]:
    """Subject ``any`` probability and false hemorrhage (mL) of a training model on a normal CT.

    The trainer logs these at every validation (``validation.real_normal_series``), so the
    curves show whether the real study's false positives fall as training goes on, not only
    the synthetic figures. ``model`` runs whole series in one pass on its current device, in
    eval mode; the caller restores training mode.
    """
    device = next(model.parameters()).device

    def run_network(x: np.ndarray, sink: ChunkSink | None) -> NetworkOutput:
        with torch.inference_mode():
            seg_logits, slice_logits, subject_logits = model(torch.from_numpy(x)[None].to(device))
        output = NetworkOutput(
            seg_probabilities(seg_logits[0].float(), dim=1).cpu().numpy(),
            slice_logits[0].float().cpu().numpy(),
            subject_logits[0].float().cpu().numpy(),
        )
        return to_sink(output, sink)  # the whole series in one call, like Triton

    prediction = run_pipeline(volume, run_network, grid, keep_probabilities=False)
    return {
        "any": float(prediction.subject_probabilities[CLASS_NAMES.index("any")]),
        "false_hemorrhage_ml": hemorrhage_volume_ml(prediction.labels, volume),
    }


def read_normal_series(folders: Sequence[Path]) -> list[Volume]:
    """The volumes of ``validation.real_normal_series``; missing folders skipped with a warning
    (the GPU machine has no ../shared)."""
    volumes = []
    for folder in folders:
        if not folder.is_dir():
            logger.warning("validation.real_normal_series: %s not found; not checked", folder)
            continue
        volumes.append(read_series(folder))
    return volumes


def worst_normal_figures(
    model: torch.nn.Module, grid: ModelGrid, volumes: Sequence[Volume]
) -> dict[str, float]:
    """The highest subject ``any`` and false hemorrhage (mL) over ``volumes`` (metrics.csv
    columns ``val_real_normal_any`` / ``val_real_normal_false_ml``); ``{}`` without volumes.

    Restores ``model``'s training mode afterwards.
    """
    if not volumes:
        return {}
    was_training = model.training
    model.eval()
    try:
        figures = [normal_ct_figures(model, grid, volume) for volume in volumes]
    finally:
        model.train(was_training)
    return {
        "val_real_normal_any": max(f["any"] for f in figures),
        "val_real_normal_false_ml": max(f["false_hemorrhage_ml"] for f in figures),
    }


def check(folder: Path, weights_path: Path | None, out_dir: Path) -> dict[str, Any]:
    """Run the weights on the series in ``folder``; write report.json and overlay.png."""
    weights = load_weights(weights_path)
    volume = read_series(folder)
    prediction = TorchEngine(weights).predict(volume)
    report = {
        "series_instance_uid": volume.series_instance_uid,
        "weights": {
            "path": str(weights.path),
            "sha256": weights.sha256,
            "version": weights.version,
        },
        "slices": volume.num_slices,
        "covered_mm": float(volume.slice_extent_mm.sum()),
        "subject": {
            name: float(p)
            for name, p in zip(CLASS_NAMES, prediction.subject_probabilities, strict=True)
        },
        "present": weights.operating_points.present(prediction.subject_probabilities),
        "operating_points": dict(weights.operating_points.subject),
        "brain_volume_ml": brain_volume_ml(prediction.labels, volume),
        "hemorrhage_volume_ml": hemorrhage_volume_ml(prediction.labels, volume),
        "compartment_volumes_ml": (
            {
                name: label_volume_ml(prediction.compartments, index, volume.voxel_volumes_ml())
                for index, name in enumerate(SUBTYPES, start=1)
            }
            if prediction.compartments is not None
            else None
        ),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_overlay(volume, prediction, out_dir / "overlay.png")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.real_ct", description=__doc__.splitlines()[0]
    )
    parser.add_argument("folder", type=Path, help="folder with one CT series")
    parser.add_argument(
        "--weights", type=Path, default=None, help="weights file (default: bundled)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for report.json and overlay.png"
    )
    args = parser.parse_args(argv)
    report = check(args.folder, args.weights, args.out)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
