"""The outbox keeps result files, complete and in order, until each one is acknowledged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicom_node.outbox import (
    Outbox,
    acknowledge,
    pending_files,
    remove_if_empty,
)


def _secondary_capture(rows: int = 4) -> Dataset:
    """A tiny, valid Secondary Capture instance with file meta."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.Rows = rows
    ds.Columns = rows
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(rows * rows, dtype=np.uint8).tobytes()
    return ds


def test_for_storage_dir_uses_outbox_folder(tmp_path: Path) -> None:
    outbox = Outbox.for_storage_dir(tmp_path)
    assert outbox.root == tmp_path / "outbox"
    assert outbox.root.is_dir()
    assert outbox.job_dir(7) == tmp_path / "outbox" / "7"


def test_job_dir_refuses_non_positive_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="job ids start at 1, got 0"):
        Outbox(tmp_path).job_dir(0)


def test_add_writes_files_in_order_and_readable(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    job_dir = outbox.prepare(3)
    first, second = _secondary_capture(), _secondary_capture()
    seg_path = outbox.add(3, first, "seg")
    sr_path = outbox.add(3, second, "sr")

    assert [p.name for p in pending_files(job_dir)] == ["00-seg.dcm", "01-sr.dcm"]
    assert (seg_path, sr_path) == tuple(pending_files(job_dir))
    back = dcmread(seg_path)
    assert back.SOPInstanceUID == first.SOPInstanceUID
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.PixelData == first.PixelData
    # No temporary file is left behind.
    assert sorted(p.name for p in job_dir.iterdir()) == ["00-seg.dcm", "01-sr.dcm"]


def test_prepare_discards_leftovers_of_interrupted_run(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.prepare(1)
    outbox.add(1, _secondary_capture(), "seg")
    (outbox.job_dir(1) / ".01-sr.dcm.tmp").write_bytes(b"half written")

    job_dir = outbox.prepare(1)
    assert list(job_dir.iterdir()) == []


def test_pending_ignores_temporary_and_foreign_files(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    job_dir = outbox.prepare(2)
    kept = outbox.add(2, _secondary_capture(), "seg")
    (job_dir / ".01-sr.dcm.tmp").write_bytes(b"being written")
    (job_dir / "notes.txt").write_text("not a result")
    assert pending_files(job_dir) == [kept]


def test_pending_of_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"outbox folder .*/missing does not exist"):
        pending_files(tmp_path / "missing")


def test_add_needs_prepare_and_a_plain_name(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"call prepare\(5\) first"):
        outbox.add(5, _secondary_capture(), "seg")
    outbox.prepare(5)
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="plain file-name stem"):
            outbox.add(5, _secondary_capture(), bad)


def test_acknowledge_and_remove_if_empty(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    job_dir = outbox.prepare(4)
    seg = outbox.add(4, _secondary_capture(), "seg")
    sr = outbox.add(4, _secondary_capture(), "sr")

    acknowledge(seg)
    assert pending_files(job_dir) == [sr]
    assert remove_if_empty(job_dir) is False  # an unsent result stays for inspection
    assert job_dir.is_dir()

    acknowledge(sr)
    assert remove_if_empty(job_dir) is True
    assert not job_dir.exists()
    assert remove_if_empty(job_dir) is True  # already gone is fine
