"""Pixel decoding → Hounsfield units (ichnet_core.imaging.pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ichnet_core.imaging.pixels import (
    AIR_HU,
    PixelDataError,
    decode_hu,
    decode_stored_values,
    grey_scale_problem,
    number_of_frames,
    stored_to_hu,
)

MR_SYNTAXES = "transfer_syntaxes/mr_one_slice_9_syntaxes"
PYDICOM_DATA = "transfer_syntaxes/pydicom_data"


def make_ct_image(stored: np.ndarray, **attributes: object) -> Dataset:
    """A single-frame CT Image Storage dataset holding ``stored`` (int16 or uint16) natively."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "0"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    return ds


def _read(shared_data: Path, relative: str) -> Dataset:
    return pydicom.dcmread(shared_data / relative)


# --- real files: every transfer syntax -----------------------------------------------------------


@pytest.mark.shared_data
def test_mr_slice_decodes_identically_in_all_nine_transfer_syntaxes(shared_data: Path) -> None:
    files = sorted((shared_data / MR_SYNTAXES).glob("*.dcm"))
    assert len(files) == 9
    datasets = [pydicom.dcmread(f) for f in files]
    syntaxes = {ds.file_meta.TransferSyntaxUID for ds in datasets}
    assert len(syntaxes) >= 6  # LE explicit/implicit, BE, RLE, JPEG Lossless, JPEG-LS, J2K
    reference = decode_stored_values(datasets[0])
    assert reference.shape == (384, 384)
    assert reference.max() > 0
    for path, ds in zip(files, datasets, strict=True):
        decoded = decode_stored_values(ds)
        assert decoded.dtype.isnative, path.name
        np.testing.assert_array_equal(decoded, reference, err_msg=path.name)


@pytest.mark.shared_data
def test_ct_jpeg2000_lossless_equals_uncompressed_in_hu(shared_data: Path) -> None:
    j2k = _read(shared_data, f"{PYDICOM_DATA}/693_J2KR.dcm")
    raw = _read(shared_data, f"{PYDICOM_DATA}/693_UNCR.dcm")
    hu_j2k, hu_raw = decode_hu(j2k), decode_hu(raw)
    assert hu_j2k.dtype == np.float32
    np.testing.assert_array_equal(hu_j2k, hu_raw)
    # RescaleIntercept -1024, PixelPaddingValue -2000: padding became air, nothing below it.
    assert hu_raw.min() == AIR_HU
    assert hu_raw.max() > 700  # skull


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name",
    ["emri_small_RLE", "emri_small_jpeg_ls_lossless", "emri_small_jpeg_2k_lossless"],
)
def test_compressed_multi_frame_equals_big_endian(shared_data: Path, name: str) -> None:
    reference = decode_stored_values(
        _read(shared_data, f"{PYDICOM_DATA}/emri_small_big_endian.dcm")
    )
    decoded = decode_stored_values(_read(shared_data, f"{PYDICOM_DATA}/{name}.dcm"))
    assert reference.shape == (10, 64, 64)
    assert reference.dtype.isnative
    np.testing.assert_array_equal(decoded, reference)


@pytest.mark.shared_data
def test_deflated_transfer_syntax_decodes(shared_data: Path) -> None:
    ds = _read(shared_data, "malformed/pydicom/image_dfl.dcm")
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    decoded = decode_stored_values(ds)
    assert decoded.shape == (512, 512)
    assert decoded.max() > decoded.min()


@pytest.mark.shared_data
def test_rgb_screen_capture_is_not_grey_scale(shared_data: Path) -> None:
    ds = _read(shared_data, "malformed/rgb_screenshot_ct/ctbrain1.dcm")
    assert "YBR_FULL_422" in (grey_scale_problem(ds) or "")
    with pytest.raises(PixelDataError, match="not grey-scale HU data"):
        decode_stored_values(ds)


@pytest.mark.shared_data
def test_truncated_pixel_data_is_a_clear_error(shared_data: Path) -> None:
    ds = _read(shared_data, "malformed/pydicom/MR_truncated.dcm")
    with pytest.raises(PixelDataError, match=r"cannot decode Pixel Data in Explicit VR Little"):
        decode_stored_values(ds)


@pytest.mark.shared_data
def test_undecodable_jpeg_names_the_transfer_syntax_on_one_line(shared_data: Path) -> None:
    ds = _read(shared_data, "malformed/pydicom/JPEG-lossy.dcm")
    with pytest.raises(PixelDataError, match=r"JPEG Extended") as info:
        decode_stored_values(ds)
    assert "\n" not in str(info.value)


# --- synthetic: the rescale, padding and photometric rules ---------------------------------------


def test_rescale_slope_and_intercept() -> None:
    stored = np.array([[0, 1000], [1024, 2000]], dtype=np.uint16)
    ds = make_ct_image(stored, RescaleSlope="0.5", RescaleIntercept="-1000", RescaleType="HU")
    np.testing.assert_array_equal(decode_hu(ds), [[-1000, -500], [-488, 0]])


def test_pixel_padding_value_becomes_air() -> None:
    stored = np.array([[-2000, 0], [40, 1500]], dtype=np.int16)
    ds = make_ct_image(stored, PixelPaddingValue=-2000, RescaleIntercept="-1024")
    # -2000 - 1024 would be -3024 HU; the padding pixel is air, 0 stored is -1024 anyway.
    np.testing.assert_array_equal(decode_hu(ds), [[AIR_HU, -1024], [-984, 476]])


def test_pixel_padding_range_limit_marks_the_whole_range() -> None:
    stored = np.array([[0, 5, 10, 11]], dtype=np.uint16)
    ds = make_ct_image(stored, PixelPaddingValue=10, PixelPaddingRangeLimit=0, RescaleIntercept="0")
    np.testing.assert_array_equal(decode_hu(ds), [[AIR_HU, AIR_HU, AIR_HU, 11]])


def test_padding_value_written_unsigned_for_signed_pixels() -> None:
    stored = np.array([[-2000, 100]], dtype=np.int16)
    ds = make_ct_image(stored)
    ds.add_new("PixelPaddingValue", "US", 2**16 - 2000)  # the bit pattern of -2000
    ds.RescaleIntercept = "1000"  # -2000 + 1000 = -1000 would pass as air-ish tissue if missed
    np.testing.assert_array_equal(decode_hu(ds), [[AIR_HU, 1100]])


def test_outside_field_of_view_circle_without_padding_attribute_becomes_air() -> None:
    stored = np.array([[-3024, -1000, 35]], dtype=np.int16)
    ds = make_ct_image(stored)
    np.testing.assert_array_equal(decode_hu(ds), [[AIR_HU, -1000, 35]])


def test_monochrome1_is_rescaled_not_inverted() -> None:
    # PS3.3 C.7.6.3.1.2: MONOCHROME1 only says how to *display*; HU come from the rescale alone.
    stored = np.array([[-1000, 0], [40, 1200]], dtype=np.int16)
    mono2 = decode_hu(make_ct_image(stored))
    mono1 = decode_hu(make_ct_image(stored, PhotometricInterpretation="MONOCHROME1"))
    np.testing.assert_array_equal(mono1, mono2)
    assert mono1[1, 1] == 1200  # bone stays bone


def test_rescale_type_other_than_hu_is_refused() -> None:
    ds = make_ct_image(np.zeros((2, 2), np.int16), RescaleType="US")
    with pytest.raises(PixelDataError, match=r"RescaleType 'US'.*not Hounsfield"):
        decode_hu(ds)


def test_missing_rescale_intercept_is_refused() -> None:
    ds = make_ct_image(np.zeros((2, 2), np.int16))
    del ds.RescaleIntercept
    with pytest.raises(PixelDataError, match="RescaleIntercept missing"):
        decode_hu(ds)


def test_zero_slope_is_refused() -> None:
    ds = make_ct_image(np.zeros((2, 2), np.int16), RescaleSlope="0")
    with pytest.raises(PixelDataError, match=r"RescaleSlope 0\.0"):
        decode_hu(ds)


def test_rgb_ct_image_is_refused() -> None:
    ds = make_ct_image(np.zeros((2, 2), np.int16), PhotometricInterpretation="RGB")
    ds.SamplesPerPixel = 3
    assert grey_scale_problem(ds) == (
        "PhotometricInterpretation 'RGB' with SamplesPerPixel 3: not grey-scale HU data"
    )
    with pytest.raises(PixelDataError, match="not grey-scale HU data"):
        decode_hu(ds)


def test_decode_writes_into_a_preallocated_slice() -> None:
    stored = np.arange(12, dtype=np.int16).reshape(3, 4)
    volume = np.zeros((2, 3, 4), dtype=np.float32)
    result = decode_hu(make_ct_image(stored), out=volume[1])
    assert np.shares_memory(result, volume)
    np.testing.assert_array_equal(volume[1], stored)
    assert not volume[0].any()


def test_stored_to_hu_rejects_an_output_of_the_wrong_shape() -> None:
    ds = make_ct_image(np.zeros((2, 2), np.int16))
    with pytest.raises(ValueError, match=r"out must be float32 of shape \(2, 2\)"):
        stored_to_hu(ds, np.zeros((2, 2), np.int16), out=np.zeros((3, 3), np.float32))


def test_multi_frame_is_refused_by_decode_hu() -> None:
    ds = make_ct_image(np.zeros((4, 4), np.int16), NumberOfFrames=2)
    ds.Rows = 2
    with pytest.raises(PixelDataError, match="NumberOfFrames is 2"):
        decode_hu(ds)


def test_number_of_frames_is_checked() -> None:
    ds = make_ct_image(np.zeros((2, 2), np.int16))
    assert number_of_frames(ds) == 1
    ds.NumberOfFrames = 0
    with pytest.raises(PixelDataError, match="NumberOfFrames 0 must be >= 1"):
        number_of_frames(ds)


@pytest.mark.shared_data
def test_damaged_number_of_frames_is_a_clear_error(shared_data: Path) -> None:
    ds = _read(shared_data, "malformed/pydicom/badVR.dcm")  # NumberOfFrames '1A'
    with (
        pytest.warns(UserWarning, match="Invalid value for VR IS"),
        pytest.raises(PixelDataError, match="NumberOfFrames '1A' is not an integer"),
    ):
        number_of_frames(ds)


def test_missing_transfer_syntax_is_a_clear_error() -> None:
    ds = make_ct_image(np.zeros((2, 2), np.int16))
    del ds.file_meta.TransferSyntaxUID
    with pytest.raises(PixelDataError, match="no Transfer Syntax UID"):
        decode_hu(ds)
