"""How thick the generator's labelled haematomas are: specks and one-pixel slivers per subtype.

The label rules (``render.VISIBLE_BLOOD_MAX_HU``, ``case.MIN_VISIBLE_AREA_MM2``) decide which
blood is labelled; the planner decides how thick a rim is. Where the inner-table band or bone
hides most of a thin subdural or epidural rim, what stays labelled may be a sliver one model
pixel wide: a "finding" no reader could make and no model can learn (2026-12-05: with a trial
140 HU rule it was the only blood of 2 of the 28 bleeding test series). This script measures it
before and after a planner or label change, on the seeds of a split:

- per subtype: cases where it is present, how many of them have no *core* (the mask eroded
  in-plane by ``--core-mm``; nothing left = nowhere that thick), the median largest-slice area;
- the hemorrhage volume quantiles (a fix that re-plans slivers larger must not empty the small
  end of the volume distribution, where the hardest and most important cases are).

    PYTHONPATH=. python bench/generator_labels.py --split test --count 64 [--rows 384]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (puts the repo on sys.path)

from ichnet_core.labels import SUBTYPES
from ichnet_core.synthetic import SyntheticConfig, generate_case
from training.data.splits import Split, synthetic_seeds


def core_area_mm2(mask: np.ndarray, pixel_spacing: tuple[float, float], core_mm: float) -> float:
    """Largest area (mm^2) on one slice of ``mask`` eroded in-plane by ``core_mm`` (whole pixels;
    pixels coarser than ``2 * core_mm`` erode nothing: one of them is that thick already)."""
    steps = round(core_mm / float(np.mean(pixel_spacing)))
    in_plane = np.zeros((1, 3, 3), dtype=bool)
    in_plane[0] = ndimage.generate_binary_structure(2, 1)
    core = ndimage.binary_erosion(mask, in_plane, iterations=steps) if steps else mask
    return float(core.sum(axis=(1, 2)).max()) * float(np.prod(pixel_spacing))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=[s.value for s in Split], default="test")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--rows", type=int, default=384, help="generator matrix (cpu_diag: 384)")
    parser.add_argument("--core-mm", type=float, default=1.0, help="in-plane erosion (mm)")
    args = parser.parse_args(argv)
    config = SyntheticConfig(rows=args.rows, columns=args.rows)
    present = dict.fromkeys(SUBTYPES, 0)
    coreless: dict[str, list[int]] = {s: [] for s in SUBTYPES}
    areas: dict[str, list[float]] = {s: [] for s in SUBTYPES}
    volumes: list[float] = []
    for seed in synthetic_seeds(Split(args.split), args.count):
        case = generate_case(seed, config)
        if not case.subtype_masks.any():
            continue
        volumes.append(case.hemorrhage_volume_ml)
        pixel_mm2 = float(np.prod(case.pixel_spacing))
        for subtype, mask in zip(SUBTYPES, case.subtype_masks, strict=True):
            if not mask.any():
                continue
            present[subtype] += 1
            areas[subtype].append(float(mask.sum(axis=(1, 2)).max()) * pixel_mm2)
            if core_area_mm2(mask, case.pixel_spacing, args.core_mm) == 0.0:
                coreless[subtype].append(seed)
    print(f"{args.split}: {args.count} series, {len(volumes)} bleeding, {args.rows} px generator")
    print("subtype | present | no core (seeds) | median largest-slice area mm^2")
    for subtype in SUBTYPES:
        median = f"{np.median(areas[subtype]):.0f}" if areas[subtype] else "-"
        print(
            f"{subtype} | {present[subtype]} | {len(coreless[subtype])} {coreless[subtype]} | {median}"
        )
    quantiles = np.percentile(volumes, [0, 10, 25, 50, 75, 100]) if volumes else []
    print("hemorrhage mL at 0/10/25/50/75/100 %:", " ".join(f"{q:.2f}" for q in quantiles))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
