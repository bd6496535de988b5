"""The contact sheet CLI (ichnet_core.synthetic.contact_sheet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ichnet_core.labels import SUBTYPES
from ichnet_core.synthetic import SyntheticConfig, generate_case
from ichnet_core.synthetic.contact_sheet import (
    DEFAULT_ROWS,
    HEADER_HEIGHT,
    LABEL_WIDTH,
    SUBTYPE_COLOURS,
    main,
    overlay,
)


def test_main_writes_a_png_with_one_row_per_case(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "sheet.png"
    assert main(["--out", str(out), "--matrix", "64"]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (LABEL_WIDTH + 8 * 64, HEADER_HEIGHT + 64 * len(DEFAULT_ROWS))


def test_overlay_draws_each_subtype_in_its_colour() -> None:
    case = generate_case(3, SyntheticConfig(rows=64, columns=64), subtypes=("EDH",))
    k = int(np.argmax(case.subtype_masks[SUBTYPES.index("EDH")].sum(axis=(1, 2))))
    rgb = overlay(case, k)
    colour = np.array(SUBTYPE_COLOURS[SUBTYPES.index("EDH")])
    assert rgb.shape == (64, 64, 3)
    assert np.all(rgb == colour, axis=-1).any()
