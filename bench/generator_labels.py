"""How thick the generator's labelled haematomas are: specks and one-pixel slivers per subtype.

The label rules (``render.VISIBLE_BLOOD_MAX_HU``, ``case.MIN_VISIBLE_AREA_MM2``) decide which
blood is labelled; the planner decides how thick a rim is. Where the inner-table band or bone
hides most of a thin subdural or epidural rim, what stays labelled may be a sliver one model
pixel wide: a "finding" no reader could make and no model can learn (2026-12-05: with a trial
140 HU rule it was the only blood of 2 of the 28 bleeding test series). This script measures it
before and after a planner or label change, on the seeds of a split:

- per subtype: cases where it is present, how many of them have no *core* (the mask eroded
  in-plane by ``--core-mm``; nothing left = nowhere that thick), the median largest-slice area,
  and the share of its labelled voxels (pooled) at most ``--shell-hu``: blood that reads as blood
  beside brain, not blood lit up by the inner-table band's 0-2 mm shell (150-200 HU);
- the hemorrhage volume quantiles (a fix that re-plans slivers larger must not empty the small
  end of the volume distribution, where the hardest and most important cases are);
- per bleeding series, the *contrast* of its most conspicuous slice: median HU of the blood's
  core minus that of the brain in a ring just outside it. The real-CT effects (inner-table band,
  tangential partial volume) brighten blood and brain alike, and partial volume mixes brain into
  a thin clot, so a series can be labelled bleeding while no slice shows its blood brighter than
  the brain beside it. Such series bound what any model can reach on a split (2026-12-05, test
  split: one of 28, the 0.26 mL epidural sliver 2000035; the 15 mL series 2000022 that run 7
  missed shows a clot of 84 HU in brain of 105 HU on its largest slice, but 50 HU above the
  brain on four others, so that miss is the network's).

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

from ichnet_core.labels import BRAIN, HEMORRHAGE, SUBTYPES
from ichnet_core.synthetic import SyntheticConfig, generate_case
from training.data.splits import Split, synthetic_seeds


def whole_pixels(mm: float, pixel_spacing: tuple[float, float]) -> int:
    """``mm`` in whole in-plane pixels (rounded; may be 0)."""
    return round(mm / float(np.mean(pixel_spacing)))


def core_area_mm2(mask: np.ndarray, pixel_spacing: tuple[float, float], core_mm: float) -> float:
    """Largest area (mm^2) on one slice of ``mask`` eroded in-plane by ``core_mm`` (whole pixels;
    pixels coarser than ``2 * core_mm`` erode nothing: one of them is that thick already)."""
    steps = whole_pixels(core_mm, pixel_spacing)
    in_plane = np.zeros((1, 3, 3), dtype=bool)
    in_plane[0] = ndimage.generate_binary_structure(2, 1)
    core = ndimage.binary_erosion(mask, in_plane, iterations=steps) if steps else mask
    return float(core.sum(axis=(1, 2)).max()) * float(np.prod(pixel_spacing))


def best_contrast_hu(
    hu: np.ndarray, labels: np.ndarray, pixel_spacing: tuple[float, float], ring_mm: float
) -> float:
    """Highest, over the slices with blood, median HU of the blood core (eroded by one pixel;
    the whole blood where that leaves nothing) minus the median HU of the brain (label 1) within
    ``ring_mm`` outside the blood; NaN when no slice has brain beside its blood."""
    steps = max(whole_pixels(ring_mm, pixel_spacing), 1)
    best = float("nan")
    for k in np.flatnonzero((labels == HEMORRHAGE).any(axis=(1, 2))):
        blood = labels[k] == HEMORRHAGE
        ring = ndimage.binary_dilation(blood, iterations=steps) & (labels[k] == BRAIN)
        if not ring.any():
            continue
        core = ndimage.binary_erosion(blood)
        inside = hu[k][core] if core.any() else hu[k][blood]
        contrast = float(np.median(inside) - np.median(hu[k][ring]))
        best = contrast if np.isnan(best) else max(best, contrast)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=[s.value for s in Split], default="test")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--rows", type=int, default=384, help="generator matrix (cpu_diag: 384)")
    parser.add_argument("--core-mm", type=float, default=1.0, help="in-plane erosion (mm)")
    parser.add_argument("--ring-mm", type=float, default=3.0, help="brain ring width (mm)")
    parser.add_argument(
        "--shell-hu", type=float, default=140.0, help="blood brighter than this: band-lit"
    )
    parser.add_argument(
        "--faint-hu", type=float, default=20.0, help="list series whose best contrast is below"
    )
    args = parser.parse_args(argv)
    config = SyntheticConfig(rows=args.rows, columns=args.rows)
    present = dict.fromkeys(SUBTYPES, 0)
    coreless: dict[str, list[int]] = {s: [] for s in SUBTYPES}
    areas: dict[str, list[float]] = {s: [] for s in SUBTYPES}
    below = dict.fromkeys(SUBTYPES, 0)
    labelled = dict.fromkeys(SUBTYPES, 0)
    volumes: list[float] = []
    contrasts: dict[int, float] = {}
    for seed in synthetic_seeds(Split(args.split), args.count):
        case = generate_case(seed, config)
        if not case.subtype_masks.any():
            continue
        volumes.append(case.hemorrhage_volume_ml)
        contrasts[seed] = best_contrast_hu(case.hu, case.labels, case.pixel_spacing, args.ring_mm)
        pixel_mm2 = float(np.prod(case.pixel_spacing))
        for subtype, mask in zip(SUBTYPES, case.subtype_masks, strict=True):
            if not mask.any():
                continue
            present[subtype] += 1
            per_slice = mask.sum(axis=(1, 2))
            areas[subtype].append(float(per_slice.max()) * pixel_mm2)
            labelled[subtype] += int(per_slice.sum())
            below[subtype] += int((case.hu[mask] <= args.shell_hu).sum())
            if core_area_mm2(mask, case.pixel_spacing, args.core_mm) == 0.0:
                coreless[subtype].append(seed)
    print(f"{args.split}: {args.count} series, {len(volumes)} bleeding, {args.rows} px generator")
    print(
        "subtype | present | no core (seeds) | median largest-slice area mm^2 | "
        f"labelled voxels <= {args.shell_hu:.0f} HU"
    )
    for subtype in SUBTYPES:
        median = f"{np.median(areas[subtype]):.0f}" if areas[subtype] else "-"
        share = f"{below[subtype] / labelled[subtype]:.2f}" if labelled[subtype] else "-"
        print(
            f"{subtype} | {present[subtype]} | {len(coreless[subtype])} {coreless[subtype]} | "
            f"{median} | {share}"
        )
    quantiles = np.percentile(volumes, [0, 10, 25, 50, 75, 100]) if volumes else []
    print("hemorrhage mL at 0/10/25/50/75/100 %:", " ".join(f"{q:.2f}" for q in quantiles))
    values = np.array(list(contrasts.values()))
    if values.size:
        print(
            "best-slice contrast HU (blood core - brain ring) at 0/10/25/50 %:",
            " ".join(f"{q:.0f}" for q in np.nanpercentile(values, [0, 10, 25, 50])),
        )
    faint = {s: c for s, c in contrasts.items() if np.isnan(c) or c < args.faint_hu}
    print(
        f"series whose blood is nowhere {args.faint_hu:.0f} HU above the brain beside it:",
        len(faint),
        ", ".join(f"{seed} ({c:.0f})" for seed, c in sorted(faint.items())) or "-",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
