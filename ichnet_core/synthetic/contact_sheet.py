"""A contact sheet of generated cases, to look at what the generator makes.

One row per hemorrhage subtype, one negative and one mixed case. Each row shows three slices
through the hemorrhage (brain window, then the same slice with the ground truth outlined in the
subtype's colour and the brain class in green), and a skull-base slice in brain and bone windows.

``python -m ichnet_core.synthetic.contact_sheet --out docs/synthetic_contact_sheet.png``
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ichnet_core.labels import BRAIN, HEMORRHAGE, SUBTYPES
from ichnet_core.synthetic.case import SyntheticCase, generate_case
from ichnet_core.synthetic.config import SyntheticConfig

logger = logging.getLogger(__name__)

#: (lower, upper) HU of the display windows.
BRAIN_WINDOW = (0.0, 80.0)
BONE_WINDOW = (-400.0, 1600.0)
#: Overlay colour of each subtype (SUBTYPES order) and of the brain class outline.
SUBTYPE_COLOURS = ((230, 40, 40), (250, 220, 0), (230, 60, 230), (255, 140, 0), (0, 220, 255))
BRAIN_COLOUR = (60, 200, 60)
FILL_OPACITY = 0.35
LABEL_WIDTH = 150
HEADER_HEIGHT = 34
#: Relative position in the stack of the skull-base slice and of the slices shown for negatives.
SKULL_BASE_FRACTION = 0.2
NEGATIVE_FRACTIONS = (0.45, 0.6, 0.75)


@dataclass(frozen=True)
class Row:
    """One row of the sheet: a title and how to generate its case."""

    title: str
    seed: int
    subtypes: tuple[str, ...]


DEFAULT_ROWS = (
    *(Row(s, 1000 + i, (s,)) for i, s in enumerate(SUBTYPES)),
    Row("negative", 1010, ()),
    Row("mixed", 1011, ("CPH", "IVH", "SAH")),
    Row("mixed", 1012, ("EDH", "SDH", "SAH")),
)


def _window(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    return (np.clip((hu - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def overlay(case: SyntheticCase, k: int) -> np.ndarray:
    """RGB brain-window image of slice ``k`` with the ground truth drawn on it."""
    grey = _window(case.hu[k], BRAIN_WINDOW)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    rgb[_outline(case.labels[k] >= BRAIN)] = BRAIN_COLOUR
    for s, colour in enumerate(SUBTYPE_COLOURS):
        mask = case.subtype_masks[s, k]
        if not mask.any():
            continue
        rgb[mask] = (1.0 - FILL_OPACITY) * rgb[mask] + FILL_OPACITY * np.asarray(
            colour, dtype=np.float32
        )
        rgb[_outline(mask)] = colour
    return rgb.astype(np.uint8)


def _slices(case: SyntheticCase) -> list[int]:
    area = (case.labels == HEMORRHAGE).sum(axis=(1, 2))
    if area.any():
        positive = np.flatnonzero(area)
        best = int(np.argmax(area))
        picks = [int(positive[len(positive) // 4]), best, int(positive[(3 * len(positive)) // 4])]
        return (
            sorted(set(picks))
            if len(set(picks)) == 3
            else [int(positive[0]), best, int(positive[-1])]
        )
    return [int(f * (case.num_slices - 1)) for f in NEGATIVE_FRACTIONS]


def _grey_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2)


def render_row(case: SyntheticCase) -> list[np.ndarray]:
    """The eight RGB tiles of one row."""
    tiles: list[np.ndarray] = []
    for k in _slices(case):
        tiles.append(_grey_rgb(_window(case.hu[k], BRAIN_WINDOW)))
        tiles.append(overlay(case, k))
    base = round(SKULL_BASE_FRACTION * (case.num_slices - 1))
    tiles.append(_grey_rgb(_window(case.hu[base], BRAIN_WINDOW)))
    tiles.append(_grey_rgb(_window(case.hu[base], BONE_WINDOW)))
    return tiles


def render_sheet(
    rows: Sequence[Row] = DEFAULT_ROWS, config: SyntheticConfig | None = None
) -> Image.Image:
    """Generate the cases of ``rows`` and lay them out as one image."""
    config = config or SyntheticConfig()
    tile = config.rows
    font = ImageFont.load_default(size=13)
    width = LABEL_WIDTH + 8 * config.columns
    sheet = Image.new("RGB", (width, HEADER_HEIGHT + tile * len(rows)), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    draw.text(
        (8, 4),
        "Synthetic head CT (ichnet_core.synthetic): brain window 0-80 HU | ground truth overlay",
        fill=(255, 255, 255),
        font=font,
    )
    x = 8
    for name, colour in zip(SUBTYPES, SUBTYPE_COLOURS, strict=True):
        draw.text((x, 19), name, fill=colour, font=font)
        x += 46
    draw.text((x, 19), "brain class outline", fill=BRAIN_COLOUR, font=font)
    draw.text(
        (LABEL_WIDTH + 6 * config.columns + 4, 19),
        "skull base: brain | bone window",
        fill=(200, 200, 200),
        font=font,
    )
    for r, row in enumerate(rows):
        case = generate_case(row.seed, config, subtypes=row.subtypes, hemorrhage=bool(row.subtypes))
        y = HEADER_HEIGHT + r * tile
        for c, t in enumerate(render_row(case)):
            sheet.paste(Image.fromarray(t), (LABEL_WIDTH + c * config.columns, y))
        text = (
            f"{row.title}\nseed {row.seed}\n{case.hemorrhage_volume_ml:.1f} mL\n"
            f"{case.num_slices} slices\nthk {case.slice_thickness_mm:.1f} mm\n"
            f"px {case.pixel_spacing[0]:.2f} mm\ntilt {case.gantry_tilt_deg:.0f} deg\n{case.convolution_kernel}"
        )
        draw.multiline_text((8, y + 6), text, fill=(255, 255, 255), font=font, spacing=3)
        logger.info("row %s: seed %d, %.1f mL", row.title, row.seed, case.hemorrhage_volume_ml)
    return sheet


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: render the sheet to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument(
        "--matrix", type=int, default=256, help="rows and columns of the cases (default 256)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sheet = render_sheet(config=SyntheticConfig(rows=args.matrix, columns=args.matrix))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    logger.info("wrote %s (%d x %d)", args.out, *sheet.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
