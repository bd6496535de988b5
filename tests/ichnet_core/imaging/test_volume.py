"""Series → geometric HU volume (ichnet_core.imaging.volume)."""

from __future__ import annotations

import math
import random
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ichnet_core.imaging.pixels import AIR_HU
from ichnet_core.imaging.volume import (
    Volume,
    VolumeError,
    build_volume,
    slice_geometry,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
#: The real study's tilt, and the per-slice spacings dcm_qa_ct documents for it.
TILT_DEG = 18.5
NEAR_4_MM, NEAR_7_MM, GAP_MM = 4.002, 6.999, 1.081


def tilted_orientation(tilt_deg: float) -> tuple[float, ...]:
    """IOP of an axial slice tilted about the patient's x axis, as a tilted gantry writes it."""
    t = math.radians(tilt_deg)
    return (1.0, 0.0, 0.0, 0.0, math.cos(t), -math.sin(t))


def make_slice(
    position: Sequence[float],
    *,
    orientation: Sequence[float] = AXIAL,
    series_uid: str = "1.2.3.4",
    value: int = 40,
    rows: int = 8,
    columns: int = 8,
    **attributes: object,
) -> Dataset:
    """A small CT Image Storage slice at ``position``; its pixels hold ``value`` HU."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.3.9"
    ds.Modality = "CT"
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.SliceThickness = "5"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    for keyword, attribute in attributes.items():
        setattr(ds, keyword, attribute)
    ds.PixelData = np.full((rows, columns), value + 1024, dtype="<i2").tobytes()
    return ds


def axial_series(offsets: Sequence[float], **kwargs: object) -> list[Dataset]:
    """Axial slices at z = offsets, each filled with its index so the order can be read back."""
    return [
        make_slice((-2.0, -2.0, z), value=i, **kwargs)  # type: ignore[arg-type]
        for i, z in enumerate(offsets)
    ]


# --- the real tilted GE head CT ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tilted_datasets(head_ct_dir: Path) -> list[Dataset]:
    return [pydicom.dcmread(path) for path in sorted(head_ct_dir.glob("*.dcm"))]


@pytest.fixture(scope="module")
def tilted_volume(tilted_datasets: list[Dataset]) -> Volume:
    shuffled = list(tilted_datasets)
    random.Random(7).shuffle(shuffled)
    return build_volume(shuffled)


@pytest.mark.shared_data
def test_tilted_study_is_sorted_along_the_normal(tilted_volume: Volume) -> None:
    assert tilted_volume.num_slices == 28
    assert tilted_volume.hu.shape == (28, 512, 512)
    assert tilted_volume.hu.dtype == np.float32
    offsets = tilted_volume.positions @ tilted_volume.normal
    assert np.all(np.diff(offsets) > 0)
    # The normal is tilted 18.5 degrees from the patient z axis, as the header says.
    angle = math.degrees(math.acos(tilted_volume.normal[2]))
    assert angle == pytest.approx(TILT_DEG, abs=0.05)
    assert np.linalg.norm(tilted_volume.normal) == pytest.approx(1.0)
    assert tilted_volume.sop_instance_uids == tuple(
        ds.SOPInstanceUID for ds in tilted_volume.datasets
    )


@pytest.mark.shared_data
def test_tilted_study_slice_extents(tilted_volume: Volume) -> None:
    extent = tilted_volume.slice_extent_mm
    # 14 slices 4 mm apart, a 1.08 mm step, then 14 slices 7 mm apart.
    np.testing.assert_allclose(extent[:13], NEAR_4_MM, atol=0.01)
    assert extent[13] == pytest.approx((NEAR_4_MM + GAP_MM) / 2, abs=0.01)
    assert extent[14] == pytest.approx((GAP_MM + NEAR_7_MM) / 2, abs=0.01)
    np.testing.assert_allclose(extent[15:], NEAR_7_MM, atol=0.01)
    assert extent[-1] == pytest.approx(NEAR_7_MM, abs=0.01)  # the end uses its one neighbour


@pytest.mark.shared_data
def test_tilted_study_hounsfield_units(tilted_volume: Volume) -> None:
    hu = tilted_volume.hu
    # Padding (stored -1500, PixelPaddingValue) is air and nothing lies below air.
    assert hu.min() == AIR_HU
    assert np.all((hu == AIR_HU).sum(axis=(1, 2)) >= 62180)
    supratentorial = hu[20]
    assert -1024 <= np.median(supratentorial[240:270, 5:25]) <= -950  # air beside the head
    assert 20 <= np.median(supratentorial[150:180, 200:230]) <= 50  # frontal brain
    assert np.all(hu.max(axis=(1, 2)) > 700)  # skull on every slice


@pytest.mark.shared_data
def test_shuffled_input_gives_the_same_volume(
    tilted_datasets: list[Dataset], tilted_volume: Volume
) -> None:
    in_file_order = build_volume(tilted_datasets)
    reversed_order = build_volume(tilted_datasets[::-1])
    for other in (in_file_order, reversed_order):
        np.testing.assert_array_equal(other.hu, tilted_volume.hu)
        np.testing.assert_array_equal(other.positions, tilted_volume.positions)
        np.testing.assert_array_equal(other.slice_extent_mm, tilted_volume.slice_extent_mm)
        assert other.sop_instance_uids == tilted_volume.sop_instance_uids
    assert tilted_volume.series_instance_uid == tilted_datasets[0].SeriesInstanceUID
    assert tilted_volume.frame_of_reference_uid == tilted_datasets[0].FrameOfReferenceUID


@pytest.mark.shared_data
def test_tilted_study_geometry_from_headers_only(head_ct_dir: Path, tilted_volume: Volume) -> None:
    headers = [
        pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(head_ct_dir.glob("*.dcm"))
    ]
    geometry = slice_geometry(headers[::-1])
    assert geometry.sop_instance_uids == tilted_volume.sop_instance_uids
    assert geometry.shear_deg == pytest.approx(TILT_DEG, abs=0.05)  # table moved along z


@pytest.mark.shared_data
def test_rgb_screen_captures_are_refused(shared_data: Path) -> None:
    files = sorted((shared_data / "malformed" / "rgb_screenshot_ct").glob("*.dcm"))
    with pytest.raises(VolumeError, match=r"YBR_FULL_422.*not grey-scale HU data"):
        build_volume([pydicom.dcmread(f) for f in files])


@pytest.mark.shared_data
def test_enhanced_ct_is_refused(shared_data: Path) -> None:
    ds = pydicom.dcmread(
        shared_data / "transfer_syntaxes" / "pydicom_data" / "eCT_Supplemental.dcm"
    )
    with pytest.raises(VolumeError, match=r"Enhanced CT multi-frame .*not supported for inference"):
        build_volume([ds])


@pytest.mark.shared_data
def test_abdomen_builds_with_its_own_padding(shared_data: Path) -> None:
    # Selection skips it (not a head); the volume itself is well-formed CT.
    files = sorted((shared_data / "real" / "abdomen_ct_3slice").glob("*.dcm"))
    volume = build_volume([pydicom.dcmread(f) for f in files])
    np.testing.assert_allclose(volume.slice_extent_mm, [1.0, 1.0, 1.0], atol=1e-3)
    assert volume.hu.min() == AIR_HU  # PixelPaddingValue -2000 with RescaleIntercept -1024


# --- synthetic geometry ----------------------------------------------------------------------


def test_sorted_by_position_not_by_instance_number_or_slice_location() -> None:
    series = axial_series([10.0, 0.0, 5.0])
    for ds, label in zip(series, (1, 2, 3), strict=True):
        ds.InstanceNumber = label
        ds.SliceLocation = str(-10 * label)
    volume = build_volume(series)
    np.testing.assert_array_equal(volume.positions[:, 2], [0.0, 5.0, 10.0])
    np.testing.assert_array_equal(volume.hu[:, 0, 0], [1, 2, 0])  # value = input index
    assert volume.datasets == (series[1], series[2], series[0])


def test_normal_pointing_down_sorts_along_it() -> None:
    # Column cosines along -y make the normal -z: the first slice is the highest z.
    down = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    series = axial_series([0.0, 5.0, 10.0], orientation=down)
    volume = build_volume(series)
    np.testing.assert_allclose(volume.normal, [0.0, 0.0, -1.0])
    np.testing.assert_array_equal(volume.positions[:, 2], [10.0, 5.0, 0.0])


def test_synthetic_tilted_series_with_non_uniform_spacing() -> None:
    tilt = 20.0
    orientation = tilted_orientation(tilt)
    # The table moves along z; along the tilted normal the spacing is z * cos(tilt).
    z = [0.0, 5.0, 10.0, 12.0, 19.0]
    series = [make_slice((-2.0, -2.0, zi), orientation=orientation) for zi in z]
    random.Random(1).shuffle(series)
    geometry = slice_geometry(series)
    spacing = np.diff(z) * math.cos(math.radians(tilt))
    np.testing.assert_allclose(np.diff(geometry.offsets_mm), spacing)
    expected = [spacing[0], *((spacing[:-1] + spacing[1:]) / 2), spacing[-1]]
    np.testing.assert_allclose(geometry.slice_extent_mm, expected)
    assert geometry.shear_deg == pytest.approx(tilt)


def test_single_slice_uses_slice_thickness() -> None:
    volume = build_volume([make_slice((0.0, 0.0, 0.0), SliceThickness="2.5")])
    np.testing.assert_array_equal(volume.slice_extent_mm, [2.5])
    np.testing.assert_allclose(volume.voxel_volumes_ml(), [0.5 * 0.5 * 2.5 / 1000])


def test_single_slice_without_thickness_is_refused() -> None:
    ds = make_slice((0.0, 0.0, 0.0))
    del ds.SliceThickness
    with pytest.raises(VolumeError, match="without a positive SliceThickness"):
        build_volume([ds])


def test_mixed_orientation_is_refused() -> None:
    series = axial_series([0.0, 5.0])
    series.append(make_slice((0.0, 0.0, 10.0), orientation=tilted_orientation(5.0)))
    with pytest.raises(VolumeError, match="mixed orientations"):
        build_volume(series)


def test_duplicate_positions_are_named() -> None:
    series = axial_series([0.0, 5.0, 5.0, 10.0])
    with pytest.raises(
        VolumeError, match=r"same position.*\[-2\.0, -2\.0, 5\.0\].*and \[-2\.0, -2\.0, 5\.0\]"
    ):
        build_volume(series)


def test_the_same_instance_twice_is_refused() -> None:
    series = axial_series([0.0, 5.0])
    with pytest.raises(VolumeError, match=f"SOP Instance UID \\['{series[1].SOPInstanceUID}'\\]"):
        build_volume([*series, series[1]])


def test_different_rows_are_refused() -> None:
    series = axial_series([0.0, 5.0])
    series.append(make_slice((-2.0, -2.0, 10.0), rows=6))
    with pytest.raises(VolumeError, match=r"mixed image sizes.*\(6, 8\)"):
        build_volume(series)


def test_different_pixel_spacing_is_refused() -> None:
    series = axial_series([0.0, 5.0])
    series[1].PixelSpacing = ["0.6", "0.6"]
    with pytest.raises(VolumeError, match="mixed pixel spacing"):
        slice_geometry(series)


def test_missing_image_position_is_refused() -> None:
    series = axial_series([0.0, 5.0])
    del series[1].ImagePositionPatient
    with pytest.raises(VolumeError, match=f"{series[1].SOPInstanceUID}: ImagePositionPatient"):
        build_volume(series)


def test_invalid_orientation_is_refused() -> None:
    series = axial_series([0.0, 5.0], orientation=(1.0, 0.0, 0.0, 1.0, 0.0, 0.0))
    with pytest.raises(VolumeError, match="not two orthogonal unit vectors"):
        slice_geometry(series)


def test_mixed_series_are_refused() -> None:
    series = [*axial_series([0.0, 5.0]), make_slice((-2.0, -2.0, 10.0), series_uid="1.2.3.5")]
    with pytest.raises(VolumeError, match=r"mixed series: 2 different SeriesInstanceUIDs"):
        build_volume(series)


def test_mixed_frames_of_reference_are_refused() -> None:
    series = axial_series([0.0, 5.0])
    series[0].FrameOfReferenceUID = "1.2.3.10"
    with pytest.raises(VolumeError, match="mixed frames of reference"):
        slice_geometry(series)


def test_positions_off_one_line_are_refused() -> None:
    series = axial_series([0.0, 5.0, 10.0, 15.0])
    series[2].ImagePositionPatient = ["-2.0", "8.0", "10.0"]  # 10 mm sideways
    with pytest.raises(VolumeError, match="do not lie on one line"):
        slice_geometry(series)


def test_in_plane_shift_steeper_than_any_gantry_tilt_is_refused() -> None:
    series = [make_slice((-2.0, 2.0 * z, z)) for z in (0.0, 5.0, 10.0)]  # 63 degrees
    with pytest.raises(VolumeError, match="do not stack into a volume"):
        slice_geometry(series)


def test_non_ct_modality_is_refused() -> None:
    series = axial_series([0.0, 5.0], Modality="MR")
    with pytest.raises(VolumeError, match="Modality 'MR' is not CT"):
        build_volume(series)


def test_multi_frame_ct_image_is_refused() -> None:
    series = axial_series([0.0, 5.0])
    series[0].NumberOfFrames = 2
    with pytest.raises(VolumeError, match="Enhanced CT multi-frame"):
        build_volume(series)


def test_undecodable_slice_names_the_instance() -> None:
    series = axial_series([0.0, 5.0])
    series[1].PixelData = series[1].PixelData[:10]
    with pytest.raises(VolumeError, match=f"instance {series[1].SOPInstanceUID}: cannot decode"):
        build_volume(series)


def test_no_instances_is_refused() -> None:
    with pytest.raises(VolumeError, match="no instances"):
        build_volume([])


def test_sagittal_series_builds_along_its_own_normal() -> None:
    series = [make_slice((x, 0.0, 0.0), orientation=SAGITTAL) for x in (4.0, -4.0, 0.0)]
    volume = build_volume(series)
    np.testing.assert_allclose(volume.normal, [-1.0, 0.0, 0.0])
    np.testing.assert_array_equal(volume.positions[:, 0], [4.0, 0.0, -4.0])


def test_volume_is_decoded_without_full_size_temporaries() -> None:
    series = axial_series(np.arange(40) * 2.5, rows=64, columns=64)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        volume = build_volume(series)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    one_slice = 64 * 64 * 4
    assert peak <= volume.hu.nbytes + 8 * one_slice, (peak, volume.hu.nbytes)
