"""PhysioNet CT-ICH loader on a tiny fixture in the published layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ichnet_core.labels import CLASS_NAMES, HEMORRHAGE
from training.data.case import SegKind
from training.data.csv_utils import LabelFileError
from training.data.physionet import PhysioNetIchSource, read_slice_labels

from .fixtures import write_nifti

HEADER = (
    "PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,"
    "Subdural,No_Hemorrhage,Fracture_Yes_No"
)
#: Stored superior to inferior (k runs Inferior), as some converters write it.
AFFINE = np.diag([-0.45, 0.45, -5.0, 1.0])
SLICES = 4


def _row(patient: int, number: int, ivh=0, iph=0, sah=0, edh=0, sdh=0, none=1) -> str:
    return f"{patient},{number},{ivh},{iph},{sah},{edh},{sdh},{none},0"


@pytest.fixture
def physionet_root(tmp_path: Path) -> Path:
    hu = np.full((10, 10, SLICES), -1000, dtype=np.int16)
    hu[2:8, 2:8, :] = 35
    for k in range(SLICES):
        hu[0, 0, k] = 100 * (k + 1)  # file slice index readable from the pixels
    mask = np.zeros((10, 10, SLICES), dtype=np.uint8)
    mask[4:6, 4:6, 1] = 255  # file slice 2 (SliceNumber 2) bleeds: 4 voxels
    write_nifti(tmp_path / "ct_scans" / "049.nii", hu, AFFINE)
    write_nifti(tmp_path / "masks" / "049.nii", mask, AFFINE, dtype=np.uint8)
    write_nifti(tmp_path / "ct_scans" / "050.nii", hu, AFFINE)
    write_nifti(tmp_path / "masks" / "050.nii", np.zeros_like(mask), AFFINE, dtype=np.uint8)
    rows = [HEADER]
    rows += [_row(49, n, iph=int(n == 2), sdh=int(n == 2), none=int(n != 2)) for n in range(1, 5)]
    rows += [_row(50, n) for n in range(1, 4)]  # slice 4 of patient 50 unlisted
    (tmp_path / "hemorrhage_diagnosis_raw_ct.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_slices_labels_and_mask_are_aligned(physionet_root: Path) -> None:
    source = PhysioNetIchSource(physionet_root)
    assert [e.case_id for e in source.entries] == ["physionet/049", "physionet/050"]
    case = source[0]
    assert case.hu.shape == (SLICES, 10, 10)
    # File slice k was superior for small k; the stack runs inferior first: k = 3, 2, 1, 0.
    np.testing.assert_array_equal(case.hu.max(axis=(1, 2)), [400, 300, 200, 100])
    assert case.seg_kind is SegKind.HEMORRHAGE
    bleeding = np.flatnonzero(np.any(case.seg == HEMORRHAGE, axis=(1, 2)))
    assert bleeding.tolist() == [2]  # file slice 1 (SliceNumber 2) -> stack slice 4 - 1 - 1
    cph, sdh, any_ = (CLASS_NAMES.index(n) for n in ("CPH", "SDH", "any"))
    np.testing.assert_array_equal(case.slice_labels[:, any_], [0, 0, 1, 0])
    np.testing.assert_array_equal(case.slice_labels[:, cph], [0, 0, 1, 0])
    np.testing.assert_array_equal(case.slice_labels[:, sdh], [0, 0, 1, 0])
    np.testing.assert_array_equal(case.subject_labels, [1, 1, 0, 0, 1, 0])
    assert case.hemorrhage_volume_ml() == pytest.approx(4 * 0.45 * 0.45 * 5.0 / 1000)
    assert set(np.unique(case.seg)) <= {0, HEMORRHAGE}  # brain is not invented


def test_unlisted_slices_stay_unknown(physionet_root: Path) -> None:
    case = PhysioNetIchSource(physionet_root)[1]
    # SliceNumber 4 (file slice 3) is missing; it is the most inferior stack slice.
    assert np.all(np.isnan(case.slice_labels[0]))
    np.testing.assert_array_equal(case.slice_labels[1:], 0)
    # No positive slice, one unknown slice: the subject stays unknown, not negative.
    assert np.all(np.isnan(case.subject_labels))


def test_bleeding_slice_without_subtype_keeps_subtypes_unknown(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(HEADER + "\n" + _row(60, 1, none=0) + "\n")
    labels = read_slice_labels(path)[60][1]
    assert labels[0] == 1
    assert np.all(np.isnan(labels[1:]))


def test_label_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(HEADER + "\n" + _row(60, 1) + "\n" + _row(60, 1) + "\n")
    with pytest.raises(LabelFileError, match=r":3: patient 60 slice 1 listed twice"):
        read_slice_labels(path)
    path.write_text(HEADER + "\n" + _row(60, 0) + "\n")
    with pytest.raises(LabelFileError, match="counts from 1"):
        read_slice_labels(path)
