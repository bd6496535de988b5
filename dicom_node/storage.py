"""The spool: received instances as DICOM Part 10 files, durable before success is returned.

Layout: ``<storage_dir>/incoming/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
A C-STORE success tells the sending PACS it may forget the instance, so every file is written
under a temporary name in its final directory, fsync'ed, renamed over the final name (atomic on
POSIX) and the directory fsync'ed, in that order, before :meth:`InstanceStore.store` returns.
A crash at any point leaves either the old complete file or the new complete file, plus at
worst a stray temporary file that :meth:`InstanceStore.remove_partial_files` clears at startup.

UIDs become path components, so each is checked (digits and dots, at most 64 characters,
PS3.5 9.1) before it touches the file system: a value such as ``..`` never escapes the spool.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info

from dicom_node.layout import StorageLayout
from dicom_node.stack import SliceHeader
from dicom_node.status import DataSetMismatchError, OutOfResourcesError
from ichnet_core.durable import TEMPORARY_SUFFIX, fsync_directory, write_atomic

logger = logging.getLogger(__name__)

INSTANCE_SUFFIX: Final[str] = ".dcm"
#: Temporary files start with a dot and end in ``.partial``: never mistaken for an instance.
#: PS3.10 7.1: a 128-byte preamble (zeros when unused) followed by the prefix "DICM".
_PREAMBLE_AND_PREFIX: Final[bytes] = b"\x00" * 128 + b"DICM"
#: PS3.5 9.1: a UID is at most 64 characters. Components are digit runs separated by single dots;
#: leading zeros are tolerated (real equipment sends them) but empty components are not, which
#: also rules out "." and "..".
UID_MAX_CHARS: Final[int] = 64
_UID_PATTERN: Final[re.Pattern[str]] = re.compile(r"[0-9]+(?:\.[0-9]+)*")
#: Everything under storage_dir holds patient data (DESIGN.md): files 0600, directories 0700.
PRIVATE_FILE_MODE: Final[int] = 0o600
PRIVATE_DIR_MODE: Final[int] = 0o700


@dataclass(frozen=True)
class StoredInstance:
    """One instance that is durable in the spool; what the rest of the node learns about it.

    Attributes
    ----------
    study_instance_uid, series_instance_uid, sop_instance_uid, sop_class_uid:
        The instance's identity, as validated and used for ``path``.
    path:
        The Part 10 file, already fsync'ed and renamed into place.
    calling_ae_title:
        The peer's AE title (trailing spaces removed): where results go back.
    peer_address:
        IP address of the peer's end of the association.
    peer_port:
        TCP port of the peer's end of the association.
    transfer_syntax_uid:
        The negotiated transfer syntax the data set was received (and stored) in.
    received_at:
        When the instance became durable (timezone-aware UTC).
    slice_header:
        Its slice geometry (for the settle rule of the series tracker); ``None`` when the
        header has none.
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    path: Path
    calling_ae_title: str
    peer_address: str
    peer_port: int
    transfer_syntax_uid: str
    received_at: datetime
    slice_header: SliceHeader | None = None


@dataclass(frozen=True)
class SeriesOnDisk:
    """A series found in the spool by the startup scan.

    Attributes
    ----------
    study_instance_uid, series_instance_uid:
        The series (the directory names).
    paths:
        Its instance files, sorted by name.
    newest_mtime:
        Latest modification time (seconds since the epoch) among ``paths``: how long ago the
        series last grew, so a restart can tell finished series from ones still arriving.
    """

    study_instance_uid: str
    series_instance_uid: str
    paths: tuple[Path, ...]
    newest_mtime: float


def check_uid(value: object, keyword: str) -> str:
    """Return ``value`` as a UID that is safe as a path component, or refuse it.

    Parameters
    ----------
    value:
        The attribute value as decoded (pydicom strips the trailing NULL padding of UI).
    keyword:
        The attribute's keyword, for the message.

    Returns
    -------
    str
        The UID.

    Raises
    ------
    DataSetMismatchError
        If the value is empty, longer than 64 characters, or not digits separated by dots.
    """
    text = "" if value is None else str(value)
    if not text:
        raise DataSetMismatchError(f"{keyword} is empty", error_comment=f"{keyword} is empty")
    if len(text) > UID_MAX_CHARS or _UID_PATTERN.fullmatch(text) is None:
        raise DataSetMismatchError(
            f"{keyword} {text[:80]!r} is not a valid UID (digits and dots, at most "
            f"{UID_MAX_CHARS} characters)",
            error_comment=f"{keyword} is not a valid UID",
        )
    return text


def make_private_dirs(directory: Path, *, durable: bool = False) -> None:
    """Create ``directory`` and any missing parents with mode 0700 (``Path.mkdir(parents=True)``
    would give the parents the umask's default, typically 0755).

    ``durable``: fsync each new directory's parent, so that after a crash the new entries exist
    together with a file about to be reported as stored.
    """
    missing: list[Path] = []
    current = Path(directory)
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for new_dir in reversed(missing):
        try:
            new_dir.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another thread or association
        # mkdir's mode is filtered by the umask; patient data must not depend on it.
        os.chmod(new_dir, PRIVATE_DIR_MODE)
        if durable:
            fsync_directory(new_dir.parent)


def create_private_file(path: Path) -> None:
    """Create ``path`` (empty) mode 0600 if missing, or tighten an existing file to 0600.

    For files another library opens by name (SQLite databases): made private before that
    library creates it with the umask's mode, and SQLite gives its -wal and -shm files the
    database file's mode.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def restrict_storage_dir(storage_dir: Path) -> None:
    """Create ``storage_dir`` 0700, or take group and other access away from an existing one.

    Called once at start-up: a folder an admin made with ``mkdir`` (0755) would otherwise let
    every local user list studies and read whatever a looser file mode let through.
    """
    storage_dir = Path(storage_dir)
    if not storage_dir.is_dir():
        make_private_dirs(storage_dir)
        return
    mode = storage_dir.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(storage_dir, mode & 0o700 | PRIVATE_DIR_MODE)
        logger.warning(
            "storage_dir %s was mode %03o; restricted to %03o (it holds patient data)",
            storage_dir,
            mode,
            PRIVATE_DIR_MODE,
        )


def encode_file_meta(file_meta: FileMetaDataset) -> bytes:
    """Preamble, ``DICM`` prefix and File Meta Information group (PS3.10 7.1) as bytes.

    Raises
    ------
    ValueError
        If a required File Meta element is missing (pydicom names it).
    """
    buffer = DicomBytesIO()
    # Group 0002 is always Explicit VR Little Endian (PS3.10 7.1).
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_file_meta_info(buffer, file_meta, enforce_standard=True)
    return _PREAMBLE_AND_PREFIX + buffer.getvalue()


class InstanceStore:
    """The incoming spool under ``storage_dir``; safe to use from several association threads.

    Parameters
    ----------
    storage_dir:
        The node's storage directory (``node.storage_dir``); instances go under ``incoming/``.
        Created on the first write, so a read-only check of the config touches nothing.
    """

    def __init__(self, storage_dir: Path) -> None:
        self.storage_dir = Path(storage_dir)
        self.incoming_dir = StorageLayout(self.storage_dir).incoming

    def path_for(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Path:
        """Where an instance lives; every UID is checked first (see :func:`check_uid`)."""
        series_dir = self.series_dir(study_instance_uid, series_instance_uid)
        return series_dir / (check_uid(sop_instance_uid, "SOPInstanceUID") + INSTANCE_SUFFIX)

    def store(
        self,
        encoded_dataset: bytes,
        file_meta: FileMetaDataset,
        study_instance_uid: str,
        series_instance_uid: str,
    ) -> Path:
        """Write a data set exactly as received, behind its File Meta, and make it durable.

        The data set bytes are not decoded or re-encoded: what the peer sent in the negotiated
        transfer syntax is what lands on disk. A second instance with the same SOP Instance UID
        replaces the first atomically (PS3.4 B.4.1 leaves duplicates to the SCP).

        Parameters
        ----------
        encoded_dataset:
            The data set in ``file_meta.TransferSyntaxUID`` (a C-STORE Data Set, no meta).
        file_meta:
            File Meta Information; its Media Storage SOP Instance UID names the file.
        study_instance_uid, series_instance_uid:
            The directories the instance goes into.

        Returns
        -------
        Path
            The final path, renamed into place and fsync'ed.

        Raises
        ------
        DataSetMismatchError
            If a UID is not usable as a path component.
        OutOfResourcesError
            If the file cannot be written durably (disk full, permission, I/O error).
        """
        path = self.path_for(
            study_instance_uid, series_instance_uid, file_meta.MediaStorageSOPInstanceUID
        )
        self._write_durably(path, (encode_file_meta(file_meta), encoded_dataset))
        return path

    def store_dataset(self, dataset: Dataset) -> Path:
        """Write a pydicom data set (with ``file_meta``) as a Part 10 file, durably.

        For instances that did not arrive over the network (tests, imports). The data set is
        encoded in ``dataset.file_meta.TransferSyntaxUID``.

        Returns
        -------
        Path
            The final path.

        Raises
        ------
        DataSetMismatchError
            If a UID is missing or not usable as a path component.
        OutOfResourcesError
            If the file cannot be written durably.
        """
        path = self.path_for(
            dataset.get("StudyInstanceUID", ""),
            dataset.get("SeriesInstanceUID", ""),
            dataset.get("SOPInstanceUID", ""),
        )
        buffer = DicomBytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        self._write_durably(path, (buffer.getvalue(),))
        return path

    def series_paths(self, study_instance_uid: str, series_instance_uid: str) -> list[Path]:
        """The instance files of one series, sorted by name; empty if the series is unknown."""
        directory = self.series_dir(study_instance_uid, series_instance_uid)
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.iterdir() if self.is_instance_file(p))

    def changed_series(
        self, known: Mapping[tuple[str, str], float], slack_s: float = 1e-3
    ) -> Iterator[SeriesOnDisk]:
        """Series whose folder changed after the time ``known`` has for them (the startup scan).

        ``known`` maps ``(study, series)`` to the newest instance time the job queue recorded.
        A folder's mtime moves whenever a file is renamed into it, so only folders with an
        mtime later than that (or unknown series) can hold instances no job has seen; only
        their files are listed. The rest of the spool costs one ``stat`` per series folder,
        never a listing of its files. Directories whose names are not UIDs and files that are
        not ``<uid>.dcm`` (temporary files of an interrupted write) are skipped.
        """
        if not self.incoming_dir.is_dir():
            return
        for study_dir in sorted(self.incoming_dir.iterdir()):
            if not (study_dir.is_dir() and _UID_PATTERN.fullmatch(study_dir.name)):
                continue
            for series_dir in sorted(study_dir.iterdir()):
                if not (series_dir.is_dir() and _UID_PATTERN.fullmatch(series_dir.name)):
                    continue
                seen = known.get((study_dir.name, series_dir.name))
                if seen is not None and series_dir.stat().st_mtime <= seen + slack_s:
                    continue
                paths = sorted(p for p in series_dir.iterdir() if self.is_instance_file(p))
                if paths:
                    yield SeriesOnDisk(
                        study_instance_uid=study_dir.name,
                        series_instance_uid=series_dir.name,
                        paths=tuple(paths),
                        newest_mtime=max(p.stat().st_mtime for p in paths),
                    )

    def remove_partial_files(self) -> int:
        """Delete temporary files left by writes a crash interrupted; returns how many.

        Only call this while no association is running (at startup): a temporary file of a
        write in progress looks the same.
        """
        if not self.incoming_dir.is_dir():
            return 0
        removed = 0
        for partial in self.incoming_dir.glob(f"*/*/.*{TEMPORARY_SUFFIX}"):
            partial.unlink(missing_ok=True)
            removed += 1
        if removed:
            logger.warning("removed %d partial file(s) of interrupted writes", removed)
        return removed

    def series_dir(self, study_instance_uid: str, series_instance_uid: str) -> Path:
        """The folder of one series (whether or not it exists); both UIDs are checked."""
        return (
            self.incoming_dir
            / check_uid(study_instance_uid, "StudyInstanceUID")
            / check_uid(series_instance_uid, "SeriesInstanceUID")
        )

    def ensure_series_dir(self, study_instance_uid: str, series_instance_uid: str) -> Path:
        """The series folder, created (0700, each new level fsynced) when missing."""
        directory = self.series_dir(study_instance_uid, series_instance_uid)
        make_private_dirs(directory, durable=True)
        return directory

    @staticmethod
    def is_instance_file(path: Path) -> bool:
        """A complete instance file: ``<uid>.dcm`` (never a temporary file)."""
        return path.suffix == INSTANCE_SUFFIX and _UID_PATTERN.fullmatch(path.stem) is not None

    def _write_durably(self, path: Path, chunks: tuple[bytes, ...]) -> None:
        # write_atomic's temporary name is unique per write: two associations storing the same
        # SOP Instance at once never write into each other's file; the last rename wins.
        try:
            make_private_dirs(path.parent, durable=True)
            replaced = path.exists()
            write_atomic(path, lambda handle: handle.writelines(chunks), mode=PRIVATE_FILE_MODE)
        except OSError as exc:
            raise OutOfResourcesError(
                f"cannot write {path}: {exc.strerror or exc}",
                error_comment=f"cannot store instance: {exc.strerror or type(exc).__name__}",
            ) from exc
        if replaced:
            logger.warning("SOP Instance %s received again: replaced the stored copy", path.stem)
