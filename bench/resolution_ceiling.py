"""The hemorrhage Dice and volume error a perfect network at the model grid would reach.

Why: issue 8 asks for a mean hemorrhage Dice >= 0.85 and a median volume error <= 1 mL at an
input of at most 1.0 mm per pixel, judged at source resolution (0.53-0.80 mm pixels on the
synthetic split). A network sees 1.0 mm pixels; its probabilities are brought back onto the
source matrix (``ichnet_core.inference.pipeline.labels_at_source``) and decided there. How much
of the gap to the target is the grid's and not the network's? Two oracles, through the node's
own post-processing and the evaluation's Dice:

- **targets**: the network reproduces its training targets exactly (the majority class of each
  model pixel, ``PlaneMapping.labels_to_model``), as one-hot probabilities;
- **fractions**: it predicts, for each model pixel, the fraction of it each class covers (the
  area-averaged one-hot planes, ``PlaneMapping.class_fractions``): the best calibrated answer a
  network at that grid can give.

    PYTHONPATH=. python bench/resolution_ceiling.py [--config training/configs/cpu_diag.yaml]
        [--split test] [--cases 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (puts the repo on sys.path)

from ichnet_core.imaging.measure import mask_volume_ml
from ichnet_core.imaging.model_grid import PlaneMapping
from ichnet_core.inference.pipeline import labels_at_source
from ichnet_core.labels import HEMORRHAGE, NUM_SEGMENTATION_CLASSES
from training.config import load_config
from training.data.build import build_split
from training.data.case import LabelledCase
from training.data.dataset import prepare_case
from training.data.splits import Split
from training.metrics import dice
from training.networks import build_network, grid_of


def oracle_probabilities(case: LabelledCase, mapping: PlaneMapping, kind: str) -> np.ndarray:
    """``[S, 3, I, I]`` probabilities of the oracle ``kind`` ("targets" or "fractions")."""
    assert case.seg is not None
    classes = NUM_SEGMENTATION_CLASSES
    if kind == "targets":
        labels = mapping.labels_to_model(case.seg, classes)
        return (labels[:, None] == np.arange(classes)[None, :, None, None]).astype(np.float32)
    return np.stack([mapping.class_fractions(plane, classes) for plane in case.seg])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("training/configs/cpu_diag.yaml"))
    parser.add_argument("--split", default="test", choices=[s.value for s in Split])
    parser.add_argument("--cases", type=int, default=64)
    args = parser.parse_args()
    config = load_config(args.config)
    grid = grid_of(build_network(config.model))
    source = build_split(config, Split(args.split))
    rows: dict[str, list[tuple[float, float, float]]] = {"targets": [], "fractions": []}
    for index in range(min(args.cases, len(source))):
        case = source.load(index)
        if case.seg is None or not (case.seg == HEMORRHAGE).any():
            continue
        truth = case.seg == HEMORRHAGE
        voxel_ml = case.voxel_volumes_ml()
        mapping = prepare_case(case, grid).mapping
        for kind, out in rows.items():
            labels, _ = labels_at_source(oracle_probabilities(case, mapping, kind), mapping)
            predicted = labels == HEMORRHAGE
            out.append(
                (
                    mask_volume_ml(truth, voxel_ml),
                    mask_volume_ml(predicted, voxel_ml),
                    float(dice(predicted, truth) or 0.0),
                )
            )
    for kind, out in rows.items():
        table = np.array(out)
        errors = np.abs(table[:, 1] - table[:, 0])
        small = table[:, 0] < 5.0
        print(
            f"{kind:9s} {len(table)} bleeding series: mean Dice {table[:, 2].mean():.3f} "
            f"(< 5 mL: {table[small, 2].mean():.3f} over {int(small.sum())}; >= 5 mL: "
            f"{table[~small, 2].mean():.3f}), median |volume error| {np.median(errors):.2f} mL, "
            f"median signed {np.median(table[:, 1] - table[:, 0]):+.2f} mL"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
