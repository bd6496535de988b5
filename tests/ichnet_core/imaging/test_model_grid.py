"""The source <-> model-grid mapping shared by inference and training."""

from __future__ import annotations

import numpy as np
import pytest

from ichnet_core.imaging.model_grid import ModelGrid, foreground_map
from ichnet_core.imaging.resample import to_model_size


def _disc(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, columns = np.mgrid[0:size, 0:size]
    return (np.hypot(rows + 0.5 - centre[0], columns + 0.5 - centre[1]) < radius).astype(np.float32)


def test_legacy_grid_resizes_the_whole_field_of_view() -> None:
    image = np.random.default_rng(0).random((2, 100, 80)).astype(np.float32)
    mapping = ModelGrid(32).plan((100, 80), (0.7, 0.7))
    np.testing.assert_allclose(mapping.to_model(image), to_model_size(image, 32), atol=1e-6)


def test_fixed_spacing_keeps_millimetres_whatever_the_matrix() -> None:
    # A 60 mm wide disc on a 512 matrix of 0.5 mm and on a 256 matrix of 1.0 mm pixels.
    grid = ModelGrid(128, 1.0)
    fine = _disc(512, (256, 256), 60)  # 60 px of 0.5 mm = 30 mm radius
    coarse = _disc(256, (128, 128), 30)  # 30 px of 1.0 mm = 30 mm radius
    a = grid.plan(fine.shape, (0.5, 0.5)).to_model(fine)
    b = grid.plan(coarse.shape, (1.0, 1.0)).to_model(coarse)
    assert a.shape == b.shape == (128, 128)
    area_mm2 = np.pi * 30**2
    assert abs(a.sum() - area_mm2) / area_mm2 < 0.02
    assert abs(b.sum() - area_mm2) / area_mm2 < 0.02
    assert np.abs(a - b).mean() < 0.01


def test_pixel_size_is_never_coarser_than_asked() -> None:
    mapping = ModelGrid(256, 1.0).plan((512, 512), (0.4883, 0.4883))
    rows, columns = mapping.scaled_shape
    assert 512 * 0.4883 / rows <= 1.0 and 512 * 0.4883 / columns <= 1.0


def test_window_is_centred_on_the_head_and_maps_back() -> None:
    size = 512
    head = _disc(size, (150, 330), 90)  # off-centre head, 0.5 mm pixels
    hu = np.where(head > 0, 40.0, -1000.0)[None].astype(np.float32)
    mapping = ModelGrid(64, 2.0).plan((size, size), (0.5, 0.5), foreground_map(hu))
    model = mapping.to_model(head)
    rows, columns = np.nonzero(model > 0.5)
    assert abs(rows.mean() - 31.5) < 1.5 and abs(columns.mean() - 31.5) < 1.5
    back = mapping.to_source(model)
    assert back.shape == (size, size)
    inside = head > 0
    assert (back[inside] > 0.5).mean() > 0.97 and (back[~inside] > 0.5).mean() < 0.01


def test_small_field_of_view_is_padded_and_outside_gets_the_fill() -> None:
    mapping = ModelGrid(64, 1.0).plan((40, 40), (1.0, 1.0))
    assert mapping.offset == (-12, -12)
    planes = np.ones((3, 40, 40), dtype=np.float32)
    model = mapping.to_model(planes, fill=[0.5, 0.0, 0.0])
    assert model[0, 0, 0] == 0.5 and model[1, 0, 0] == 0.0 and model[1, 32, 32] == 1.0
    # A window smaller than the image: source pixels outside it get the fill on the way back.
    big = ModelGrid(16, 1.0).plan((40, 40), (1.0, 1.0))
    back = big.to_source(np.zeros((3, 16, 16), dtype=np.float32), fill=[1.0, 0.0, 0.0])
    assert back[0, 0, 0] == pytest.approx(1.0) and back[0, 20, 20] == pytest.approx(0.0)


def test_labels_keep_the_majority_class() -> None:
    seg = np.zeros((1, 8, 8), dtype=np.uint8)
    seg[0, :4, :] = 1
    seg[0, 0, 0] = 2  # one pixel of 16 in its output cell: outvoted
    resized = ModelGrid(2).plan((8, 8), (1.0, 1.0)).labels_to_model(seg, 3)
    np.testing.assert_array_equal(resized[0], [[1, 1], [0, 0]])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="spacing_mm"):
        ModelGrid(32, 0.0)
    with pytest.raises(ValueError, match="foreground map"):
        ModelGrid(32, 1.0).plan((8, 8), (1.0, 1.0), np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="do not match the source"):
        ModelGrid(32).plan((8, 8), (1.0, 1.0)).to_model(np.zeros((4, 4)))
