"""CT Image Storage output (ichnet_core.synthetic.dicom)."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from ichnet_core.imaging.volume import build_volume
from ichnet_core.labels import HEMORRHAGE
from ichnet_core.synthetic import (
    SyntheticCase,
    SyntheticConfig,
    generate_case,
    to_datasets,
    write_series,
)
from ichnet_core.synthetic.geometry import fov_circle
from ichnet_core.synthetic.scanner import AIR_HU

SMALL = SyntheticConfig(rows=96, columns=96)


@cache
def make(seed: int, tilt: bool = False) -> SyntheticCase:
    config = SyntheticConfig(rows=96, columns=96, gantry_tilt_probability=1.0 if tilt else 0.0)
    return generate_case(seed, config, subtypes=("SDH",))


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    """HU through the Modality LUT, padding mapped to air (as the node's volume builder does)."""
    stored = ds.pixel_array
    hu = stored.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    padding = ds.get("PixelPaddingValue")
    if padding is not None:
        hu[stored == padding] = AIR_HU
    return hu


@pytest.mark.parametrize("seed", range(6))
def test_round_trip_recovers_hu_exactly(tmp_path: Path, seed: int) -> None:
    case = make(seed)
    paths = write_series(case, tmp_path)
    assert [p.name for p in paths[:2]] == ["CT0001.dcm", "CT0002.dcm"]
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert np.array_equal(_hu(ds), case.hu[k]), f"slice {k}"
        assert np.allclose(
            [float(v) for v in ds.ImagePositionPatient], case.positions[k], atol=1e-3
        )
    ds = pydicom.dcmread(paths[0])
    outside = ~fov_circle(*case.hu.shape[1:])
    if case.storage.padding_value is not None:
        assert np.all(ds.pixel_array[outside] == case.storage.padding_value)


def test_storage_conventions_vary_between_cases() -> None:
    conventions = {
        (make(s).storage.pixel_representation, make(s).storage.rescale_intercept) for s in range(6)
    }
    assert conventions == {(1, 0.0), (0, -1024.0)}


def test_required_attributes() -> None:
    case = make(1)
    datasets = to_datasets(case)
    assert len(datasets) == case.num_slices
    ds = datasets[0]
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.Modality == "CT" and ds.BodyPartExamined == "HEAD"
    assert "HEAD" in ds.SeriesDescription.upper()
    assert str(ds.PatientName) == "SYNTHETIC^PHANTOM"
    assert float(ds.RescaleSlope) == 1.0
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx(case.pixel_spacing, abs=1e-4)
    assert float(ds.SliceThickness) == pytest.approx(case.slice_thickness_mm, abs=1e-3)
    assert [int(d.InstanceNumber) for d in datasets] == list(range(1, case.num_slices + 1))
    assert len({d.SOPInstanceUID for d in datasets}) == case.num_slices
    assert len({d.SeriesInstanceUID for d in datasets}) == 1


def test_uids_are_deterministic_unless_given() -> None:
    a, b = to_datasets(make(1)), to_datasets(make(1))
    assert [d.SOPInstanceUID for d in a] == [d.SOPInstanceUID for d in b]
    assert a[0].StudyInstanceUID == b[0].StudyInstanceUID
    other = to_datasets(make(2))
    assert other[0].StudyInstanceUID != a[0].StudyInstanceUID
    given = to_datasets(
        make(1),
        study_instance_uid="1.2.3.4",
        series_instance_uid="1.2.3.4.5",
        patient_id="P1",
        patient_name="DOE^JOHN",
    )
    assert given[0].StudyInstanceUID == "1.2.3.4" and given[0].SeriesInstanceUID == "1.2.3.4.5"
    assert given[0].PatientID == "P1" and str(given[0].PatientName) == "DOE^JOHN"
    assert given[0].SOPInstanceUID != a[0].SOPInstanceUID


def test_volume_builder_agrees_on_geometry_and_hemorrhage_volume() -> None:
    case = make(4, tilt=True)
    assert case.gantry_tilt_deg != 0.0
    volume = build_volume(to_datasets(case))
    assert np.array_equal(volume.hu, case.hu)
    assert np.allclose(volume.slice_extent_mm, case.slice_extents_mm())
    measured = float(
        ((case.labels == HEMORRHAGE).sum(axis=(1, 2)) * volume.voxel_volumes_ml()).sum()
    )
    assert measured == pytest.approx(case.hemorrhage_volume_ml)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
@pytest.mark.parametrize("seed", [0, 2])
def test_dciodvfy_reports_no_errors(tmp_path: Path, seed: int) -> None:
    paths = write_series(make(seed, tilt=seed == 0), tmp_path)
    result = subprocess.run(
        ["dciodvfy", str(paths[len(paths) // 2])], capture_output=True, text=True, timeout=60
    )
    report = result.stdout + result.stderr
    assert "Error" not in report, report
    assert "CTImage" in report
