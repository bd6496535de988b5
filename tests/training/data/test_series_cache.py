"""Series cache: RSNA-style DICOM and BHSD-style NIfTI fixtures decoded once, read back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from training.cli import train_main
from training.config import config_hash, parse_config
from training.data.build import build_split
from training.data.case import LabelledCase, SegKind
from training.data.nifti_labelmap import NiftiLabelMapSource
from training.data.rsna import RsnaSource
from training.data.series_cache import (
    SeriesCacheSource,
    cache_folder,
    fill_cache,
    read_series,
    write_series,
)
from training.data.source import CaseEntry, CaseSource
from training.data.splits import Split

from .fixtures import write_nifti
from .fixtures import write_series as write_dicom_series

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")


def _rsna(root: Path) -> Path:
    """Two RSNA-layout series (DICOM slices + stage_2_train.csv); one subdural slice."""
    lines = ["ID,Label"]
    for number, heights in enumerate(([5.0, 0.0, 10.0], [0.0, 5.0])):
        sops = [f"ID_{number}{k:08x}" for k in range(len(heights))]
        write_dicom_series(
            root / "stage_2_train",
            heights,
            study_uid=f"ID_st{number}",
            series_uid=f"ID_se{number}",
            patient_id=f"ID_pa{number}",
            names=[f"{sop}.dcm" for sop in sops],
            sop_uids=sops,
            rsna_style=True,
        )
        for k, sop in enumerate(sops):
            bleed = int(number == 0 and k == 0)
            for name in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid"):
                lines.append(f"{sop}_{name},0")
            lines += [f"{sop}_subdural,{bleed}", f"{sop}_any,{bleed}"]
    (root / "stage_2_train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _bhsd(root: Path) -> Path:
    """One BHSD-layout image + label map: epidural on slice 0, intraparenchymal on slice 2."""
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    image = np.random.default_rng(0).integers(-1024, 1500, size=(16, 16, 3))
    labels = np.zeros((16, 16, 3), dtype=np.uint8)
    labels[1:4, 1:4, 0] = 1
    labels[8:11, 8:11, 2] = 2
    write_nifti(root / "imagesTr" / "ID_a_ID_b_0000.nii.gz", image, affine)
    write_nifti(root / "labelsTr" / "ID_a_ID_b.nii.gz", labels, affine, dtype=np.uint8)
    return root


def _assert_same_case(a: LabelledCase, b: LabelledCase) -> None:
    assert (a.case_id, a.group_id, a.seg_kind) == (b.case_id, b.group_id, b.seg_kind)
    np.testing.assert_array_equal(a.hu, b.hu)
    assert b.hu.dtype == np.float32 and a.pixel_spacing == b.pixel_spacing
    np.testing.assert_array_equal(a.slice_extent_mm, b.slice_extent_mm)
    for name in ("seg", "compartments", "slice_labels", "subject_labels"):
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None), name
        if left is not None:
            np.testing.assert_array_equal(left, right, err_msg=name)  # NaN == NaN here


def test_rsna_series_are_decoded_once_and_read_back_exactly(tmp_path: Path) -> None:
    root = _rsna(tmp_path / "rsna")
    direct = RsnaSource(root)
    cached = SeriesCacheSource(RsnaSource(root), cache_folder(tmp_path / "cache", "rsna", root))
    report = fill_cache(cached, workers=2)
    assert (report.cases_written, report.cases_cached, report.slices_written) == (2, 0, 5)
    assert report.slices_per_second_per_worker > 0
    expected = [direct[i] for i in range(len(direct))]
    for path in (root / "stage_2_train").iterdir():  # from now on only the cache can answer
        path.unlink()
    for index, case in enumerate(expected):
        _assert_same_case(case, cached[index])
    assert cached[0].slice_labels is not None and cached[0].seg_kind is SegKind.NONE
    again = fill_cache(cached, workers=1)
    assert (again.cases_written, again.cases_cached) == (0, 2)
    assert cached.fingerprint(0) != cached.fingerprint(1)
    assert cached.fingerprint(0).startswith("series-")


def test_bhsd_volume_and_label_map_round_trip(tmp_path: Path) -> None:
    root = _bhsd(tmp_path / "bhsd")
    direct = NiftiLabelMapSource(
        root, "bhsd", name="bhsd", image_dir="imagesTr", label_dir="labelsTr"
    )
    cached = SeriesCacheSource(direct, tmp_path / "cache")
    first, second = cached[0], cached[0]  # written, then read from the file
    case = direct[0]
    _assert_same_case(case, first)
    _assert_same_case(case, second)
    assert case.seg_kind is SegKind.HEMORRHAGE and int(case.seg.sum()) > 0
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_hu_kept_as_int16_whole_numbers_and_bad_files_are_reread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hu = np.array([[[-1024.0, 30.4], [40.6, 40000.0]]], dtype=np.float32)
    case = LabelledCase("x/1", "x/1", hu, (0.5, 0.5), np.array([5.0]))
    path = tmp_path / "x.npz"
    write_series(path, case)
    with np.load(path) as data:
        assert data["hu"].dtype == np.int16
    np.testing.assert_array_equal(read_series(path).hu, [[[-1024, 30], [41, 32767]]])

    class Counting(CaseSource):
        """One case; counts how often the (slow) source is read."""

        name = "x"
        reads = 0

        @property
        def entries(self) -> list[CaseEntry]:
            return [CaseEntry("x/1", "x/1")]

        def load(self, index: int) -> LabelledCase:
            self.reads += 1
            return case

    inner = Counting()
    cached = SeriesCacheSource(inner, tmp_path / "cache")
    assert cached[0].hu[0, 0, 1] == 30.4  # the first read comes from the source itself
    assert cached[0].hu[0, 0, 1] == 30 and inner.reads == 1
    cached.path(0).write_bytes(b"not an npz")
    assert cached[0].hu[0, 0, 1] == 30.4
    assert inner.reads == 2 and "unreadable" in caplog.text


def test_config_series_cache_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _rsna(tmp_path / "rsna")
    data = {
        "output_dir": str(tmp_path / "run"),
        "data": {
            "cache_dir": str(tmp_path / "cache"),
            "synthetic": None,
            "datasets": [{"kind": "rsna", "root": str(root), "split": "train"}],
        },
    }
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert train_main(["cache", "--config", str(config_file), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "2 series written (5 slices)" in printed and "slices/s per worker" in printed

    with_cache = parse_config({**data, "data": {**data["data"], "series_cache": True}})
    assert config_hash(with_cache) == config_hash(parse_config(data))  # where, not what
    source = build_split(with_cache, Split.TRAIN)
    assert len(source) == 2
    for path in (root / "stage_2_train").iterdir():
        path.unlink()
    assert source[1].hu.shape == (2, 8, 8)
