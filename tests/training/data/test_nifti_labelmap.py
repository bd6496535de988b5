"""Generic NIfTI image + label-map loader (BHSD / INSTANCE style) on tiny fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ichnet_core.labels import BRAIN, CLASS_NAMES, HEMORRHAGE, NON_BRAIN
from training.data.case import SegKind
from training.data.nifti import NiftiError
from training.data.nifti_labelmap import NiftiLabelMapSource, case_name, resolve_label_map

from .fixtures import write_nifti

AFFINE = np.diag([0.5, 0.5, 5.0, 1.0])  # RAS, slices inferior to superior
SHAPE = (8, 8, 3)


def _pair(
    root: Path, name: str, labels: np.ndarray | None, image_dir="images", label_dir="labels"
) -> None:
    write_nifti(root / image_dir / f"{name}_0000.nii.gz", np.full(SHAPE, 30), AFFINE)
    if labels is not None:
        write_nifti(root / label_dir / f"{name}.nii.gz", labels, AFFINE, dtype=np.uint8)


def test_bhsd_preset_gives_subtype_slice_labels(tmp_path: Path) -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[1:3, 1:3, 0] = 1  # epidural on slice 0
    labels[5:7, 5:7, 2] = 2  # intraparenchymal on slice 2
    _pair(tmp_path, "ID_0237f3c9_ID_40015688b9", labels)
    _pair(tmp_path, "unlabelled", None)  # no label map: skipped
    source = NiftiLabelMapSource(tmp_path, "bhsd", name="bhsd")
    assert [e.case_id for e in source.entries] == ["bhsd/ID_0237f3c9_ID_40015688b9"]
    case = source[0]
    assert case.seg_kind is SegKind.HEMORRHAGE
    assert set(np.unique(case.seg)) == {NON_BRAIN, HEMORRHAGE}
    edh, cph, any_ = (CLASS_NAMES.index(n) for n in ("EDH", "CPH", "any"))
    np.testing.assert_array_equal(case.slice_labels[:, any_], [1, 0, 1])
    np.testing.assert_array_equal(case.slice_labels[:, edh], [1, 0, 0])
    np.testing.assert_array_equal(case.slice_labels[:, cph], [0, 0, 1])
    assert not np.isnan(case.slice_labels).any()  # every subtype known from the map
    np.testing.assert_array_equal(case.subject_labels, [1, 1, 0, 1, 0, 0])
    assert case.hemorrhage_volume_ml() == pytest.approx(8 * 0.5 * 0.5 * 5.0 / 1000)


def test_instance_preset_leaves_subtypes_of_bleeding_slices_unknown(tmp_path: Path) -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2:4, 2:4, 1] = 1
    _pair(tmp_path, "001", labels, image_dir="data", label_dir="label")
    case = NiftiLabelMapSource(tmp_path, "instance", image_dir="data", label_dir="label")[0]
    np.testing.assert_array_equal(case.slice_labels[:, 0], [0, 1, 0])
    assert np.all(np.isnan(case.slice_labels[1, 1:]))  # bleeding slice: subtype unknown
    np.testing.assert_array_equal(case.slice_labels[[0, 2], 1:], 0)  # no bleed: no subtype
    assert case.subject_labels[0] == 1
    assert np.all(np.isnan(case.subject_labels[1:]))


def test_brain_label_makes_a_complete_segmentation(tmp_path: Path) -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[1:7, 1:7, :] = 1
    labels[3:5, 3:5, 1] = 2
    _pair(tmp_path, "case", labels)
    case = NiftiLabelMapSource(tmp_path, {1: "brain", 2: "SDH"})[0]
    assert case.seg_kind is SegKind.FULL
    assert set(np.unique(case.seg)) == {NON_BRAIN, BRAIN, HEMORRHAGE}


def test_unmapped_label_values_are_an_error(tmp_path: Path) -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[0, 0, 0] = 9
    _pair(tmp_path, "case", labels)
    with pytest.raises(NiftiError, match=r"label values \[9\] are not in the label map"):
        NiftiLabelMapSource(tmp_path, "instance")[0]


def test_label_map_checks() -> None:
    with pytest.raises(ValueError, match="unknown label map preset 'rsna'"):
        resolve_label_map("rsna")
    with pytest.raises(ValueError, match="value 0 is background"):
        resolve_label_map({0: "CPH"})
    with pytest.raises(ValueError, match=r"classes \['blood'\] unknown"):
        resolve_label_map({1: "blood"})
    assert case_name(Path("case_0000.nii.gz")) == case_name(Path("case.nii")) == "case"
