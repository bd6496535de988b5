"""The spool: Part 10 files behind fsync + atomic rename, safe paths, and the startup scan."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.handlers import build_file_meta
from dicom_node.status import DataSetMismatchError, OutOfResourcesError, StoreStatus
from dicom_node.storage import InstanceStore, check_uid, restrict_storage_dir
from tests.dicom_node.instances import (
    SERIES_UID,
    STUDY_UID,
    ct_slice,
    dataset_bytes,
    encode_dataset,
)


def _store_slice(store: InstanceStore, sop_instance_uid: str | None = None) -> tuple[Path, bytes]:
    ds = ct_slice(sop_instance_uid)
    encoded = encode_dataset(ds, ImplicitVRLittleEndian)
    meta = build_file_meta(ds.SOPClassUID, ds.SOPInstanceUID, ImplicitVRLittleEndian, "PACS")
    return store.store(encoded, meta, STUDY_UID, SERIES_UID), encoded


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".dcm"))


def test_store_writes_a_part10_file_with_the_bytes_as_received(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    path, encoded = _store_slice(store, "1.2.3.4.5")
    assert path == tmp_path / "incoming" / STUDY_UID / SERIES_UID / "1.2.3.4.5.dcm"
    assert dataset_bytes(path) == encoded
    stored = dcmread(path)
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert stored.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.5"
    assert stored.file_meta.SourceApplicationEntityTitle == "PACS"
    assert stored.SOPInstanceUID == "1.2.3.4.5"
    assert _leftovers(path.parent) == []


def test_store_dataset_encodes_in_the_file_meta_transfer_syntax(tmp_path: Path) -> None:
    ds = ct_slice(transfer_syntax=ExplicitVRLittleEndian)
    path = InstanceStore(tmp_path).store_dataset(ds)
    assert path.name == f"{ds.SOPInstanceUID}.dcm"
    stored = dcmread(path)
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert stored.PixelData == ds.PixelData


def test_durability_steps_happen_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """File fsync'ed before the rename, the directory fsync'ed after it (POSIX durability)."""
    store = InstanceStore(tmp_path)
    _store_slice(store, "1.2.3.4.0")  # directories exist; now watch one plain write
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        steps.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        steps.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _store_slice(store, "1.2.3.4.1")
    assert steps == ["fsync-file", "rename", "fsync-dir"]


def test_new_directories_are_fsynced_into_their_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    _store_slice(InstanceStore(tmp_path), "1.2.3.4.1")
    incoming = tmp_path / "incoming"
    for parent in (tmp_path, incoming, incoming / STUDY_UID):
        assert str(parent) in synced, f"{parent} not fsynced after creating its child"


def test_duplicate_sop_instance_replaces_the_file_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = InstanceStore(tmp_path)
    first, _ = _store_slice(store, "1.2.3.4.5")
    ds = ct_slice("1.2.3.4.5")
    ds.SeriesDescription = "second copy"
    encoded = encode_dataset(ds, ImplicitVRLittleEndian)
    meta = build_file_meta(ds.SOPClassUID, ds.SOPInstanceUID, ImplicitVRLittleEndian, "PACS")
    with caplog.at_level(logging.WARNING, logger="dicom_node.storage"):
        second = store.store(encoded, meta, STUDY_UID, SERIES_UID)
    assert second == first
    assert dcmread(second).SeriesDescription == "second copy"
    assert "1.2.3.4.5 received again" in caplog.text
    assert _leftovers(second.parent) == []


@pytest.mark.parametrize(
    "bad_uid",
    ["..", ".", "1.2/../../etc", "1.2.", ".1.2", "1..2", "1.2.3a", "", "1." + "2" * 63],
)
def test_uids_that_are_not_uids_never_reach_the_file_system(tmp_path: Path, bad_uid: str) -> None:
    store = InstanceStore(tmp_path)
    with pytest.raises(DataSetMismatchError, match=r"StudyInstanceUID") as caught:
        store.path_for(bad_uid, SERIES_UID, "1.2.3")
    assert caught.value.status == StoreStatus.ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    with pytest.raises(DataSetMismatchError, match=r"SOPInstanceUID"):
        store.path_for(STUDY_UID, SERIES_UID, bad_uid)
    assert not (tmp_path / "incoming").exists()


def test_check_uid_accepts_real_world_uids() -> None:
    assert check_uid("1.2.840.10008.5.1.4.1.1.2", "SOPClassUID") == "1.2.840.10008.5.1.4.1.1.2"
    # leading zeros break PS3.5 9.1 but occur in the field; they are path-safe
    assert check_uid("1.2.040.05", "SeriesInstanceUID") == "1.2.040.05"
    assert check_uid("1." + "2" * 62, "SOPInstanceUID") == "1." + "2" * 62  # exactly 64


def test_failed_rename_is_out_of_resources_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = InstanceStore(tmp_path)

    def disk_full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OutOfResourcesError, match=r"No space left on device") as caught:
        _store_slice(store, "1.2.3.4.5")
    assert caught.value.status == StoreStatus.REFUSED_OUT_OF_RESOURCES
    assert caught.value.error_comment == "cannot store instance: No space left on device"
    series_dir = tmp_path / "incoming" / STUDY_UID / SERIES_UID
    assert list(series_dir.iterdir()) == []


def test_storage_dir_that_cannot_hold_directories_is_out_of_resources(tmp_path: Path) -> None:
    # A real OS failure, no patching: 'incoming' is a file, so no series directory can exist.
    (tmp_path / "incoming").write_text("not a directory")
    with pytest.raises(OutOfResourcesError, match=r"cannot write .*: Not a directory"):
        _store_slice(InstanceStore(tmp_path), "1.2.3.4.5")


def test_changed_series_reports_complete_instances_only(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    first, _ = _store_slice(store, "1.2.3.4.1")
    second, _ = _store_slice(store, "1.2.3.4.2")
    os.utime(first, (1_000_000.0, 1_000_000.0))
    os.utime(second, (2_000_000.0, 2_000_000.0))
    series_dir = second.parent
    (series_dir / ".1.2.3.4.3.dcm.0123abcd.tmp").write_bytes(b"half a file")
    (series_dir / "notes.txt").write_text("not an instance")
    (tmp_path / "incoming" / "lost+found").mkdir()
    [series] = list(store.changed_series({}))
    assert (series.study_instance_uid, series.series_instance_uid) == (STUDY_UID, SERIES_UID)
    assert series.paths == (first, second)
    assert series.newest_mtime == 2_000_000.0
    assert store.series_paths(STUDY_UID, SERIES_UID) == [first, second]
    assert store.series_paths(STUDY_UID, "1.2.3.999") == []


def test_changed_series_on_an_empty_spool(tmp_path: Path) -> None:
    assert list(InstanceStore(tmp_path / "never-written").changed_series({})) == []


def test_changed_series_lists_only_folders_newer_than_their_jobs(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    path, _ = _store_slice(store, "1.2.3.4.1")
    os.utime(path.parent, (1_000.0, 1_000.0))
    key = (STUDY_UID, SERIES_UID)
    assert list(store.changed_series({key: 1_000.0})) == [], "the job saw the folder's last change"
    [series] = store.changed_series({key: 999.0})
    assert series.paths == (path,)
    # An unreadable file in an unchanged folder is never even listed: the scan stats folders.
    os.chmod(path.parent, 0o000)
    try:
        assert list(store.changed_series({key: 1_000.0})) == []
    finally:
        os.chmod(path.parent, 0o700)


def test_spool_files_are_0600_and_folders_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = InstanceStore(tmp_path / "storage")
        path, _ = _store_slice(store, "1.2.3.4.1")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    folder = path.parent
    while folder != tmp_path:
        assert folder.stat().st_mode & 0o777 == 0o700, folder
        folder = folder.parent


def test_restrict_storage_dir_takes_group_and_other_access_away(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir(mode=0o755)
    os.chmod(storage, 0o755)
    restrict_storage_dir(storage)
    assert storage.stat().st_mode & 0o777 == 0o700
    restrict_storage_dir(tmp_path / "new")
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700


def test_remove_partial_files(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    path, _ = _store_slice(store, "1.2.3.4.1")
    (path.parent / ".1.2.3.4.2.dcm.feedbeef.tmp").write_bytes(b"interrupted")
    assert store.remove_partial_files() == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]
