"""NIfTI orientation: any stored axis order ends as (inferior->superior, anterior->posterior, R->L)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data.nifti import NiftiError, load_image, load_label_map

from .fixtures import write_nifti

SHAPE = (6, 5, 3)  # file axes (i, j, k)
MARK = (1, 2, 0)  # a voxel to follow


def _volume() -> np.ndarray:
    data = np.full(SHAPE, -1000, dtype=np.int16)
    data[MARK] = 500
    return data


@pytest.mark.parametrize(
    ("affine", "expected_index", "flipped"),
    [
        # i to the Left, j Anterior, k Inferior (codes L, A, I): rows and slices flip.
        (np.diag([-0.5, 0.7, -5.0, 1.0]), (3 - 1 - 0, 5 - 1 - 2, 1), True),
        # Plain RAS (R, A, S): columns and rows flip, slices keep their order.
        (np.diag([0.5, 0.7, 5.0, 1.0]), (0, 5 - 1 - 2, 6 - 1 - 1), False),
    ],
)
def test_marked_voxel_lands_where_dicom_display_puts_it(
    tmp_path: Path, affine: np.ndarray, expected_index: tuple[int, int, int], flipped: bool
) -> None:
    path = tmp_path / "ct.nii.gz"
    write_nifti(path, _volume(), affine)
    stack = load_image(path)
    assert stack.data.shape == (3, 5, 6)  # (slices, rows, columns)
    assert np.argwhere(stack.data == 500).tolist() == [list(expected_index)]
    assert stack.pixel_spacing == (pytest.approx(0.7), pytest.approx(0.5))
    assert stack.slice_spacing_mm == pytest.approx(5.0)
    assert stack.source_slice_axis == 2
    assert stack.slices_flipped is flipped
    # Slice 0 of the stack is the most inferior: its world z is the smallest.
    z_of_file_slice = affine[2, 2] * np.arange(3)
    file_slices = [stack.file_slice_index(i) for i in range(3)]
    assert list(np.argsort(z_of_file_slice[file_slices])) == [0, 1, 2]


def test_world_axes_of_the_stack_follow_dicom_lps_display(tmp_path: Path) -> None:
    # A permuted, flipped storage: file axis 0 runs Superior, 1 Posterior, 2 Left.
    affine = np.array(
        [[0.0, 0.0, 0.5, 0.0], [0.0, -0.5, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    )
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    path = tmp_path / "permuted.nii"
    write_nifti(path, data, affine)
    stack = load_image(path)
    # Map stack indices back to file indices through the values, then to RAS world coordinates.
    file_index = np.stack(np.unravel_index(stack.data.astype(np.int64), SHAPE), axis=-1)
    world = file_index @ affine[:3, :3].T
    assert np.all(np.diff(world[:, 0, 0, 2]) > 0)  # slices: superior (RAS z up)
    assert np.all(np.diff(world[0, :, 0, 1]) < 0)  # rows: posterior (RAS y down)
    assert np.all(np.diff(world[0, 0, :, 0]) < 0)  # columns: patient left (RAS x down)
    assert stack.source_slice_axis == 0


def test_label_map_must_match_its_image(tmp_path: Path) -> None:
    image, labels = tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz"
    write_nifti(image, _volume(), np.diag([0.5, 0.5, 5.0, 1.0]))
    write_nifti(labels, np.zeros(SHAPE), np.diag([0.5, 0.5, 2.5, 1.0]))
    with pytest.raises(NiftiError, match="label affine differs"):
        load_label_map(labels, like=image)
    write_nifti(labels, np.zeros((6, 5, 4)), np.diag([0.5, 0.5, 5.0, 1.0]))
    with pytest.raises(NiftiError, match=r"label shape \(6, 5, 4\) differs"):
        load_label_map(labels, like=image)
    write_nifti(labels, np.full(SHAPE, 0.5), np.diag([0.5, 0.5, 5.0, 1.0]), dtype=np.float32)
    with pytest.raises(NiftiError, match="non-integer"):
        load_label_map(labels, like=image)


def test_image_without_air_is_flagged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "not_hu.nii.gz"
    write_nifti(path, np.full(SHAPE, 1000), np.eye(4))
    load_image(path)
    assert "probably not in Hounsfield units" in caplog.text
