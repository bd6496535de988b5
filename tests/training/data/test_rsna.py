"""RSNA 2019 loader on a tiny fixture in the Kaggle layout (DICOM slices + stage_2_train.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ichnet_core.labels import CLASS_NAMES
from training.data import rsna
from training.data.csv_utils import LabelFileError
from training.data.rsna import RSNA_LABELS, RsnaSource, read_labels

from .fixtures import BASE_HU, STEP_HU, write_series

#: The RSNA files carry ``ID_...`` UIDs, which pydicom flags; that is the data as published.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

#: RSNA's own label order within each image's six rows.
CSV_ORDER = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")


def _csv(path: Path, labels: dict[str, dict[str, int]], duplicate: str | None = None) -> None:
    lines = ["ID,Label"]
    for sop, values in labels.items():
        lines += [f"{sop}_{name},{values.get(name, 0)}" for name in CSV_ORDER]
    if duplicate is not None:
        lines.append(f"{duplicate}_any,{labels[duplicate].get('any', 0)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def rsna_root(tmp_path: Path) -> Path:
    """Two patients; patient A has two studies. Files named ID_<sop>.dcm, heights shuffled."""
    images = tmp_path / "stage_2_train"
    labels: dict[str, dict[str, int]] = {}
    series = [
        ("ID_aaaa0001", "ID_st0001", "ID_se0001", [10.0, -5.0, 5.0, 0.0]),
        ("ID_aaaa0001", "ID_st0002", "ID_se0002", [2.5, 7.5, -2.5]),
        ("ID_bbbb0002", "ID_st0003", "ID_se0003", [0.0, 5.0, 10.0]),
    ]
    for series_index, (patient, study, series_uid, heights) in enumerate(series):
        sops = [f"ID_{series_index}{k:08x}" for k in range(len(heights))]
        write_series(
            images,
            heights,
            study_uid=study,
            series_uid=series_uid,
            patient_id=patient,
            names=[f"{sop}.dcm" for sop in sops],
            sop_uids=sops,
            rsna_style=True,
        )
        for sop, z in zip(sops, heights, strict=True):
            labels[sop] = {}
            if series_uid == "ID_se0001" and z == 5.0:  # one subdural slice
                labels[sop] = {"subdural": 1, "any": 1}
            if series_uid == "ID_se0003" and z == 0.0:  # one epidural + subarachnoid slice
                labels[sop] = {"epidural": 1, "subarachnoid": 1, "any": 1}
    _csv(tmp_path / "stage_2_train.csv", labels, duplicate="ID_000000000")
    return tmp_path


def test_series_are_assembled_sorted_and_labelled(rsna_root: Path) -> None:
    source = RsnaSource(rsna_root)
    assert [e.case_id for e in source.entries] == [
        "rsna/ID_se0001",
        "rsna/ID_se0002",
        "rsna/ID_se0003",
    ]
    # Patient A's two studies share a group: a split never separates them.
    assert [e.group_id for e in source.entries] == ["rsna/ID_aaaa0001"] * 2 + ["rsna/ID_bbbb0002"]

    case = source[0]
    assert case.hu.shape == (4, 8, 8)
    # Slices sorted inferior to superior: heights -5, 0, 5, 10 -> HU 10, 20, 30, 40.
    np.testing.assert_allclose(case.hu[:, 0, 0], BASE_HU + STEP_HU * np.arange(4))
    np.testing.assert_allclose(case.slice_extent_mm, 5.0)
    assert case.pixel_spacing == (0.5, 0.5)
    sdh, any_ = CLASS_NAMES.index("SDH"), CLASS_NAMES.index("any")
    np.testing.assert_array_equal(case.slice_labels[:, sdh], [0, 0, 1, 0])  # z = 5 is third
    np.testing.assert_array_equal(case.slice_labels[:, any_], [0, 0, 1, 0])
    np.testing.assert_array_equal(case.subject_labels, [1, 0, 0, 0, 1, 0])
    assert case.seg is None

    negative = source[1]
    np.testing.assert_array_equal(negative.subject_labels, np.zeros(6))

    third = source[2]
    edh, sah = CLASS_NAMES.index("EDH"), CLASS_NAMES.index("SAH")
    np.testing.assert_array_equal(third.slice_labels[:, edh], [1, 0, 0])
    np.testing.assert_array_equal(third.slice_labels[:, sah], [1, 0, 0])


def test_index_file_is_written_and_reused(
    rsna_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "cache" / "rsna_index.json"
    first = RsnaSource(rsna_root, index_path=index)
    assert index.is_file()

    def no_header_reads(*args: object) -> None:
        raise AssertionError("headers read although the index exists")

    monkeypatch.setattr(rsna, "read_header", no_header_reads)
    second = RsnaSource(rsna_root, index_path=index)
    assert second.entries == first.entries
    np.testing.assert_array_equal(second[0].hu, first[0].hu)


def test_label_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "stage_2_train.csv"
    path.write_text("ID,Label\nID_abc_epidural,0\nID_abc_epidural,1\n", encoding="utf-8")
    with pytest.raises(LabelFileError, match=r":3: ID_abc_epidural repeated with a different"):
        read_labels(path)
    path.write_text("ID,Label\nID_abc_hematoma,0\n", encoding="utf-8")
    with pytest.raises(LabelFileError, match="ID_abc_hematoma"):
        read_labels(path)
    path.write_text("ID,Label\nID_abc_any,yes\n", encoding="utf-8")
    with pytest.raises(LabelFileError, match="must be 0 or 1, found 'yes'"):
        read_labels(path)


def test_every_rsna_label_maps_to_a_class() -> None:
    assert sorted(RSNA_LABELS.values()) == sorted(CLASS_NAMES)
