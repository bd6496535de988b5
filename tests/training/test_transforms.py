"""The augmentation moves image and mask together, identically on every slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.transforms import (
    IDENTITY,
    AffineParams,
    AugmentSettings,
    apply_affine,
    forward_matrix,
    sample_params,
)

SIZE = 32


def _marked(slices: int = 3, row: int = 8, column: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and mask with the same 3x3 marker at (row, column) on every slice."""
    image = torch.zeros(slices, 3, SIZE, SIZE)
    labels = torch.zeros(slices, SIZE, SIZE, dtype=torch.int64)
    image[:, :, row - 1 : row + 2, column - 1 : column + 2] = 1.0
    labels[:, row - 1 : row + 2, column - 1 : column + 2] = 2
    return image, labels


def _centroid(weights: torch.Tensor) -> np.ndarray:
    rows, columns = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    total = weights.sum()
    return np.array([(weights * rows).sum() / total, (weights * columns).sum() / total])


def _expected(params: AffineParams, row: float, column: float) -> np.ndarray:
    centre = (SIZE - 1) / 2
    x, y, _ = forward_matrix(params) @ np.array([column - centre, row - centre, 1.0])
    return np.array([y + centre, x + centre])


@pytest.mark.parametrize("seed", range(6))
def test_marker_moves_consistently_in_image_and_mask_on_every_slice(seed: int) -> None:
    settings = AugmentSettings(rotation_deg=90, shear=0.1, zoom=0.2, shift_px=4)
    params = sample_params(np.random.default_rng(seed), settings)
    image, labels = _marked()
    out_image, out_labels = apply_affine(image, labels, params)
    assert out_labels is not None and out_labels.dtype == torch.int64
    assert set(torch.unique(out_labels).tolist()) <= {0, 2}  # nearest: no blended classes
    expected = _expected(params, 8, 20)
    for index in range(3):
        mask_centre = _centroid((out_labels[index] == 2).float())
        image_centre = _centroid(out_image[index, 0])
        np.testing.assert_allclose(mask_centre, expected, atol=0.75)
        np.testing.assert_allclose(image_centre, expected, atol=0.75)
        # Identical on every slice and channel.
        torch.testing.assert_close(out_image[index], out_image[0])
        torch.testing.assert_close(out_labels[index], out_labels[0])


def test_exact_rotation_and_flip_map_pixels_to_pixels() -> None:
    image, labels = _marked(slices=1, row=8, column=20)
    quarter = AffineParams(rotation_deg=90.0)
    out_image, out_labels = apply_affine(image, labels, quarter)
    # A quarter turn about the centre: (row, col) = (8, 20) -> (20, 31 - 8) = (20, 23).
    assert out_labels is not None
    assert (out_labels[0] == 2).nonzero().float().mean(0).tolist() == [20.0, 23.0]
    assert out_image[0, 0, 20, 23].item() == pytest.approx(1.0, abs=1e-5)

    flipped_image, flipped_labels = apply_affine(image, labels, AffineParams(flip_lr=True))
    assert flipped_labels is not None
    torch.testing.assert_close(flipped_labels, torch.flip(labels, dims=[-1]))
    torch.testing.assert_close(flipped_image, torch.flip(image, dims=[-1]))


def test_different_slices_get_the_same_transform() -> None:
    torch.manual_seed(3)
    image = torch.rand(4, 3, SIZE, SIZE)
    labels = torch.randint(0, 3, (4, SIZE, SIZE))
    params = sample_params(np.random.default_rng(7), AugmentSettings())
    out_image, out_labels = apply_affine(image, labels, params)
    for index in range(4):  # one slice alone transforms exactly as inside the stack
        single_image, single_labels = apply_affine(
            image[index : index + 1], labels[index : index + 1], params
        )
        torch.testing.assert_close(out_image[index : index + 1], single_image)
        assert out_labels is not None and single_labels is not None
        torch.testing.assert_close(out_labels[index : index + 1], single_labels)


def test_outside_is_filled_with_air_and_identity_is_a_no_op() -> None:
    image = torch.ones(1, 3, SIZE, SIZE)
    labels = torch.ones(1, SIZE, SIZE, dtype=torch.int64)
    out_image, out_labels = apply_affine(image, labels, AffineParams(shift_columns=10.0))
    assert out_image[0, :, :, :9].abs().max().item() == 0.0  # window value 0 = air
    assert out_labels is not None and out_labels[0, :, :9].max().item() == 0  # non-brain
    same_image, same_labels = apply_affine(image, labels, IDENTITY)
    assert same_image is image and same_labels is labels


def test_sampled_parameters_stay_in_their_ranges() -> None:
    settings = AugmentSettings(rotation_deg=90, shear=0.1, zoom=0.2, shift_px=20)
    rng = np.random.default_rng(0)
    draws = [sample_params(rng, settings) for _ in range(200)]
    assert all(abs(p.rotation_deg) <= 90 and abs(p.shear) <= 0.1 for p in draws)
    assert all(0.8 <= p.zoom_rows <= 1.2 and 0.8 <= p.zoom_columns <= 1.2 for p in draws)
    assert all(abs(p.shift_rows) <= 20 and abs(p.shift_columns) <= 20 for p in draws)
    assert 60 < sum(p.flip_lr for p in draws) < 140
