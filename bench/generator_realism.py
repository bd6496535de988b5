"""HU next to the skull, real head CT vs synthetic negatives before and after the realism effects.

A model trained on the generator called bright voxels along the inner table, at the vertex and
in the posterior fossa of the real normal study hemorrhage (issue 8, item 5). This script shows
with numbers how close the generator's negatives come to the real study there: per region
(skull base / posterior fossa, mid-head, vertex) and per in-plane distance band from bone, the
median, 90th and 99th percentile HU of intracranial soft tissue and the share of it at 90-500 HU
(bright but not bone: what gets mistaken for blood).

The same image-only measurement is applied to both (no labels, the real study has none):
bone is HU >= 500; a pixel is intracranial when it is soft tissue (-50 to 500 HU) with bone on
all four sides along its row and column; distance to bone is the in-plane Euclidean distance in
mm. Regions follow the intracranial area per slice: below/above the largest slice and under 60 %
of its area is base/vertex, the rest mid-head. A last figure per study is the volume (mL) of
intracranial soft tissue at 90-160 HU 1-6 mm from bone: what the model's false positives on the
real study were (mean HU 95-160, a median 1-6 mm from bone).

    PYTHONPATH=. python bench/generator_realism.py --seeds 1 2 3 4 5 6 [--write-docs]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REAL_HEAD_STUDY, section_text, update_docs  # also puts the repo on sys.path

from ichnet_core.imaging.measure import voxel_volumes_ml
from ichnet_core.synthetic import SyntheticConfig, generate_case
from training.real_ct import read_series

BONE_HU: Final[float] = 500.0
SOFT_MIN_HU: Final[float] = -50.0
BRIGHT_HU: Final[float] = 90.0
#: What the model's false positives on the real study were: mean HU 95-160, 1-6 mm from bone.
BLOOD_LIKE_HU: Final[tuple[float, float]] = (90.0, 160.0)
BLOOD_LIKE_MM: Final[tuple[float, float]] = (1.0, 6.0)
BANDS_MM: Final[tuple[tuple[float, float], ...]] = ((0, 2), (2, 4), (4, 8), (8, 20), (20, 500))
REGIONS: Final[tuple[str, ...]] = ("base", "middle", "vertex")
#: A slice is base or vertex when its intracranial area is under this share of the largest.
EDGE_AREA_SHARE: Final[float] = 0.6
#: Slices with less intracranial area than this share of the largest are left out.
MIN_AREA_SHARE: Final[float] = 0.05


def _enclosed(bone: np.ndarray) -> np.ndarray:
    """Pixels with bone somewhere to their left, right, above and below."""
    out = np.ones_like(bone)
    for axis in (0, 1):
        out &= np.maximum.accumulate(bone, axis=axis)
        out &= np.flip(np.maximum.accumulate(np.flip(bone, axis), axis=axis), axis)
    return out


Samples = dict[str, list[tuple[np.ndarray, np.ndarray, float]]]


def band_samples(
    hu: np.ndarray, pixel_spacing: tuple[float, float], voxel_ml: np.ndarray
) -> Samples:
    """Per region, (HU, distance to bone mm, voxel mL) of the intracranial soft tissue of each
    slice."""
    per_slice: list[tuple[np.ndarray, np.ndarray, float] | None] = []
    areas = np.zeros(hu.shape[0])
    for k, image in enumerate(hu):
        bone = image >= BONE_HU
        inside = _enclosed(bone) & (image >= SOFT_MIN_HU) & ~bone
        labelled, count = ndimage.label(inside)
        if count == 0:
            per_slice.append(None)
            continue
        sizes = ndimage.sum(inside, labelled, range(1, count + 1))
        inside = labelled == int(np.argmax(sizes)) + 1
        distance = ndimage.distance_transform_edt(~bone, sampling=pixel_spacing)
        per_slice.append((image[inside], distance[inside], float(voxel_ml[k])))
        areas[k] = inside.sum()
    largest = int(np.argmax(areas))
    out: Samples = {r: [] for r in REGIONS}
    for k, item in enumerate(per_slice):
        if item is None or areas[k] < MIN_AREA_SHARE * areas[largest]:
            continue
        edge = areas[k] < EDGE_AREA_SHARE * areas[largest]
        region = "middle" if not edge else ("base" if k < largest else "vertex")
        out[region].append(item)
    return out


def blood_like_ml(samples: Samples) -> dict[str, float]:
    """Per region, mL of intracranial soft tissue that looks like the model's false positives
    (90-160 HU, 1-6 mm from bone)."""
    out = {}
    for region in REGIONS:
        total = 0.0
        for values, dist, ml in samples[region]:
            hit = (values >= BLOOD_LIKE_HU[0]) & (values <= BLOOD_LIKE_HU[1])
            hit &= (dist >= BLOOD_LIKE_MM[0]) & (dist <= BLOOD_LIKE_MM[1])
            total += float(hit.sum()) * ml
        out[region] = total
    return out


def blood_like_text(ml: dict[str, float]) -> str:
    cells = ", ".join(f"{r} {v:5.1f}" for r, v in ml.items())
    return f"{cells}, total {sum(ml.values()):5.1f} mL"


def band_table(samples: Samples) -> dict[str, list[str]]:
    """Per region, one cell per band: ``median/p90/p99 bright%``."""
    table: dict[str, list[str]] = {}
    for region in REGIONS:
        items = samples[region]
        if not items:
            table[region] = ["-"] * len(BANDS_MM)
            continue
        values = np.concatenate([i[0] for i in items])
        dist = np.concatenate([i[1] for i in items])
        cells = []
        for lo, hi in BANDS_MM:
            v = values[(dist > lo) & (dist <= hi)]
            if v.size == 0:
                cells.append("-")
                continue
            p50, p90, p99 = np.percentile(v, [50, 90, 99])
            bright = 100.0 * np.mean((v >= BRIGHT_HU) & (v < BONE_HU))
            cells.append(f"{p50:4.0f}/{p90:4.0f}/{p99:4.0f} {bright:4.1f}%")
        table[region] = cells
    return table


def merge(many: Sequence[Samples]) -> Samples:
    return {r: [item for s in many for item in s[r]] for r in REGIONS}


def table_text(title: str, table: dict[str, list[str]]) -> str:
    header = " | ".join(f"{f'{lo:g}-{hi:g} mm':>21s}" for lo, hi in BANDS_MM[:-1])
    lines = [f"{title}", f"{'region':7s}| {header} | {'> 20 mm':>21s}"]
    lines += [f"{r:7s}| " + " | ".join(f"{c:>21s}" for c in cells) for r, cells in table.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL_HEAD_STUDY)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)

    out: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        out.append(text)

    real = read_series(args.real)
    real_samples = band_samples(real.hu, real.pixel_spacing, real.voxel_volumes_ml())
    emit(table_text(f"real {args.real.name}", band_table(real_samples)))
    emit(
        f"  blood-like (90-160 HU, 1-6 mm from bone): {blood_like_text(blood_like_ml(real_samples))}"
    )
    after = SyntheticConfig(rows=args.matrix, columns=args.matrix)
    before = after.without_realism()
    for name, config in (("before (realism off)", before), ("after (defaults)", after)):
        runs = []
        for seed in args.seeds:
            case = generate_case(seed, config, hemorrhage=False)
            voxel_ml = voxel_volumes_ml(case.pixel_spacing, case.slice_extents_mm())
            runs.append(band_samples(case.hu, case.pixel_spacing, voxel_ml))
        title = f"\nsynthetic {name}, {args.matrix} matrix, negatives, seeds {args.seeds}"
        emit(table_text(title, band_table(merge(runs))))
        # Domain randomisation: the real study should lie inside the spread of the cases.
        emit("  per case, 2-4 mm cell of middle | vertex | blood-like mL (90-160 HU, 1-6 mm):")
        for seed, run in zip(args.seeds, runs, strict=True):
            table = band_table(run)
            emit(
                f"  seed {seed:3d}: {table['middle'][1]:>21s} | {table['vertex'][1]:>21s} | "
                + blood_like_text(blood_like_ml(run))
            )
    if args.write_docs:
        notes = (
            "Cells: median/p90/p99 HU of intracranial soft tissue and % of it at 90-500 HU "
            "(bright, not bone), by in-plane distance from bone (>= 500 HU); regions by "
            "intracranial area per slice. The real study is the normal GE head CT the model's "
            "false positives were measured on (issue 8 item 5); before = "
            "`SyntheticConfig.without_realism()`, after = the defaults."
        )
        body = "```\n" + "\n".join(out) + "\n```"
        update_docs(
            "generator_realism",
            section_text(
                "Generator realism: HU next to the skull, real vs synthetic", body, notes=notes
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
