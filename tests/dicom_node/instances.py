"""Small, valid DICOM instances made in the test, and their network encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom.dsutils import encode, split_dataset

#: A UID root for instances made by these tests (pydicom's, as generate_uid uses by default).
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1.1"


def ct_slice(
    sop_instance_uid: str | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    rows: int = 8,
    columns: int = 6,
) -> Dataset:
    """A tiny CT Image Storage instance with native int16 pixel data and file meta."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    pixels = np.arange(rows * columns, dtype=np.int16).reshape(rows, columns) - 1000
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    return ds


def encode_dataset(ds: Dataset, transfer_syntax: str) -> bytes:
    """The data set as a C-STORE would carry it in ``transfer_syntax`` (no file meta)."""
    syntax = UID(transfer_syntax)
    encoded = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    assert encoded is not None, f"pydicom could not encode the data set as {syntax.name}"
    return encoded


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part 10 file: everything after the File Meta group."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def file_meta(path: Path) -> FileMetaDataset:
    """The File Meta Information of a Part 10 file."""
    return dcmread(path, stop_before_pixels=True).file_meta
