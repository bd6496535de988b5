"""Pixel data of one DICOM image → stored values → Hounsfield units.

Decoding goes through :func:`pydicom.pixels.pixel_array` with the installed plugins (pylibjpeg,
pylibjpeg-openjpeg/-rle, pyjpegls, python-gdcm), so every transfer syntax a PACS sends is handled in
one place: Implicit/Explicit VR Little Endian, Explicit VR Big Endian, Deflated, RLE Lossless,
JPEG Lossless, JPEG-LS and JPEG 2000. Unlike ``Dataset.pixel_array`` it does not cache the decoded
array on the dataset, so a series kept in memory for the result writers does not hold a second copy.

Hounsfield units come from the Modality LUT stage of the grey-scale pipeline (PS3.4 N.2.1):
``HU = stored * RescaleSlope + RescaleIntercept``. The Photometric Interpretation is a *display*
matter (PS3.3 C.7.6.3.1.2: MONOCHROME1 means "the minimum value is displayed white after the VOI
transformation"), so MONOCHROME1 CT is rescaled exactly like MONOCHROME2 and never inverted:
inverting would turn bone into air.
"""

from __future__ import annotations

import logging
import math
from typing import Final

import numpy as np
from pydicom import Dataset
from pydicom.pixels import pixel_array

logger = logging.getLogger(__name__)

#: Value given to padding and outside-the-field-of-view pixels: air. Real tissue never measures
#: below about -1000 HU, so anything lower (GE's -2000/-1500 padding, Siemens' -3024 or -2048
#: outside-FOV circle) is not a measurement.
AIR_HU: Final[float] = -1024.0

#: The only Photometric Interpretations that carry one grey value per pixel (PS3.3 C.7.6.3.1.2).
GREY_SCALE_PHOTOMETRIC: Final[frozenset[str]] = frozenset({"MONOCHROME1", "MONOCHROME2"})

#: Rescale Type (0028,1054) of Hounsfield units; CT may omit it when the output is HU (PS3.3 C.8.2.1).
HOUNSFIELD_RESCALE_TYPE: Final[str] = "HU"

_SIGNED: Final[int] = 1  # PixelRepresentation: two's complement


class PixelDataError(ValueError):
    """Pixel data that cannot be turned into Hounsfield units; the message names the problem."""


def grey_scale_problem(ds: Dataset) -> str | None:
    """Say why ``ds`` does not hold grey-scale data, from its header alone.

    Used by series selection (headers only) and before decoding, so that a colour screen capture
    labelled "CT BRAIN" is refused for what it is rather than failing somewhere downstream.

    Parameters
    ----------
    ds:
        An image dataset; the pixel data need not be loaded.

    Returns
    -------
    str | None
        A one-line explanation ending in "not grey-scale HU data", or ``None`` when the image has
        one sample per pixel and a MONOCHROME1/MONOCHROME2 Photometric Interpretation.
    """
    samples = ds.get("SamplesPerPixel")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if samples is None or photometric == "":
        return (
            f"SamplesPerPixel {samples!r} / PhotometricInterpretation {photometric!r} missing: "
            "not grey-scale HU data"
        )
    if int(samples) != 1 or photometric not in GREY_SCALE_PHOTOMETRIC:
        return (
            f"PhotometricInterpretation {photometric!r} with SamplesPerPixel {int(samples)}: "
            "not grey-scale HU data"
        )
    return None


def number_of_frames(ds: Dataset) -> int:
    """NumberOfFrames of ``ds``, 1 when absent or empty (single-frame IODs have no such attribute).

    Raises
    ------
    PixelDataError
        When the value is not a positive integer (e.g. ``'1A'`` in a damaged file).
    """
    value = ds.get("NumberOfFrames")
    if value is None or value == "":
        return 1
    try:
        frames = int(value)
    except (TypeError, ValueError):
        raise PixelDataError(f"NumberOfFrames {value!r} is not an integer") from None
    if frames < 1:
        raise PixelDataError(f"NumberOfFrames {frames} must be >= 1")
    return frames


def decode_stored_values(ds: Dataset, frame: int | None = None) -> np.ndarray:
    """Decode the stored pixel values of ``ds`` (before any rescale), whatever the transfer syntax.

    Parameters
    ----------
    ds:
        A grey-scale image dataset with ``file_meta.TransferSyntaxUID`` and Pixel Data.
    frame:
        Zero-based frame to decode; ``None`` decodes all frames.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` for a single frame, ``(frames, rows, columns)`` when ``frame`` is
        ``None`` and the image has several frames, in native byte order (Big Endian input
        included). Signed data is sign-extended from BitsStored.

    Raises
    ------
    PixelDataError
        When the image is not grey-scale, has no Pixel Data or no transfer syntax, or the decoder
        fails (the message names the transfer syntax and the decoder's complaint).
    """
    problem = grey_scale_problem(ds)
    if problem is not None:
        raise PixelDataError(problem)
    if "PixelData" not in ds:
        raise PixelDataError("no Pixel Data (7FE0,0010) in the dataset")
    transfer_syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if transfer_syntax is None:
        raise PixelDataError("no Transfer Syntax UID (0002,0010) in the file meta information")
    try:
        stored = pixel_array(ds, index=frame)
    # Decoders are third-party plugins that raise many exception types (ValueError, RuntimeError,
    # NotImplementedError, struct.error, ...); each one means the same thing here.
    except Exception as exc:
        one_line = " ".join(str(exc).split())
        raise PixelDataError(
            f"cannot decode Pixel Data in {transfer_syntax.name} ({transfer_syntax}): {one_line}"
        ) from exc
    return stored.astype(stored.dtype.newbyteorder("="), copy=False)


def _padding_value(ds: Dataset, keyword: str) -> int | None:
    """A padding attribute in the stored-value domain (US/SS mixed up by some writers fixed)."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    value = int(value)
    bits_allocated = int(ds.get("BitsAllocated", 16))
    if ds.get("PixelRepresentation") == _SIGNED and value >= 2 ** (bits_allocated - 1):
        # Written as US although the pixels are signed: reinterpret the same bit pattern.
        value -= 2**bits_allocated
    return value


def padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """Pixels that are padding per PixelPaddingValue (+ PixelPaddingRangeLimit), or ``None``.

    PS3.3 C.7.5.1.1.2: with only Pixel Padding Value, exactly that stored value is padding; with a
    Pixel Padding Range Limit as well, every stored value between the two (inclusive) is.
    """
    value = _padding_value(ds, "PixelPaddingValue")
    if value is None:
        return None
    limit = _padding_value(ds, "PixelPaddingRangeLimit")
    if limit is None:
        return stored == value
    low, high = min(value, limit), max(value, limit)
    return (stored >= low) & (stored <= high)


def _rescale(ds: Dataset) -> tuple[float, float]:
    """(slope, intercept) of the Modality LUT; both are Type 1 in the CT Image Module."""
    missing = [k for k in ("RescaleSlope", "RescaleIntercept") if ds.get(k) in (None, "")]
    if missing:
        raise PixelDataError(
            f"{' and '.join(missing)} missing: stored values cannot be converted to Hounsfield units"
        )
    rescale_type = str(ds.get("RescaleType", "") or "").strip().upper()
    if rescale_type not in ("", HOUNSFIELD_RESCALE_TYPE):
        raise PixelDataError(
            f"RescaleType {rescale_type!r}: rescaled values are not Hounsfield units (expected 'HU')"
        )
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0.0:
        raise PixelDataError(
            f"RescaleSlope {slope!r} / RescaleIntercept {intercept!r} do not define a usable mapping"
        )
    return slope, intercept


def stored_to_hu(ds: Dataset, stored: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Turn the stored values of one frame of ``ds`` into float32 Hounsfield units.

    Padding pixels (PixelPaddingValue/PixelPaddingRangeLimit) and every value below
    :data:`AIR_HU` (the outside-the-field-of-view circle many scanners write without declaring
    padding) become :data:`AIR_HU`.

    Parameters
    ----------
    ds:
        The dataset the values came from (rescale and padding attributes are read from it).
    stored:
        ``(rows, columns)`` stored values, as returned by :func:`decode_stored_values`.
    out:
        Optional float32 array of the same shape to write into (a slice of a preallocated volume),
        so that no full-size temporary is made per slice.

    Returns
    -------
    numpy.ndarray
        ``out`` (or a new array) holding Hounsfield units.

    Raises
    ------
    PixelDataError
        When RescaleSlope/RescaleIntercept are missing or unusable, or RescaleType is not HU.
    """
    slope, intercept = _rescale(ds)
    if out is None:
        out = np.empty(stored.shape, dtype=np.float32)
    if out.shape != stored.shape or out.dtype != np.float32:
        raise ValueError(
            f"out must be float32 of shape {stored.shape}, got {out.dtype} {out.shape}"
        )
    np.multiply(stored, np.float32(slope), out=out, dtype=np.float32, casting="unsafe")
    out += np.float32(intercept)
    mask = padding_mask(ds, stored)
    if mask is not None:
        out[mask] = AIR_HU
    np.maximum(out, np.float32(AIR_HU), out=out)
    return out


def decode_hu(ds: Dataset, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a single-frame grey-scale image and return it in Hounsfield units.

    Parameters
    ----------
    ds:
        A single-frame image (CT Image Storage) with Pixel Data.
    out:
        Optional ``(Rows, Columns)`` float32 array to fill (see :func:`stored_to_hu`).

    Returns
    -------
    numpy.ndarray
        ``(Rows, Columns)`` float32 Hounsfield units.

    Raises
    ------
    PixelDataError
        For multi-frame, non-grey-scale or undecodable data, or a missing/unusable rescale.
    """
    frames = number_of_frames(ds)
    if frames != 1:
        raise PixelDataError(f"NumberOfFrames is {frames}: expected a single-frame image")
    _rescale(ds)  # refuse before paying for the decode
    return stored_to_hu(ds, decode_stored_values(ds, frame=0), out=out)
