"""The outbox: result files of a job wait on disk until the peer acknowledged each one.

Layout: ``<storage_dir>/outbox/<job_id>/NN-<name>.dcm``. The workflow fills a job's folder while
the job is RUNNING (:meth:`Outbox.prepare` then :meth:`Outbox.add` per result object) and only
then marks the job SENDING; the sender deletes each file once the peer returned a success (or
warning) status for it (:func:`acknowledge`). Consequences, all on purpose:

* a crash while the results are written leaves a RUNNING job; recovery reruns it and
  :meth:`Outbox.prepare` throws the half-filled folder away;
* a crash while sending leaves exactly the files not yet acknowledged, so only those are resent;
* every file appears under its final name complete and fsynced (temporary name, fsync,
  rename, fsync of the folder), so a truncated file is never sent.

Files are sent in the order they were added (the ``NN-`` prefix), so the SEG goes before the SR
that references it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from pydicom import Dataset, dcmwrite

from dicom_node.layout import StorageLayout
from dicom_node.storage import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, make_private_dirs
from ichnet_core.durable import fsync_directory, write_atomic

logger = logging.getLogger(__name__)

#: Suffix of every result file; anything else in a job folder is not sent.
RESULT_SUFFIX = ".dcm"
#: Files being written start with this and are never listed as pending.
TEMP_PREFIX = "."


def pending_files(job_dir: str | Path) -> list[Path]:
    """The result files in ``job_dir`` not yet acknowledged by the peer, in sending order.

    Raises
    ------
    FileNotFoundError
        If ``job_dir`` does not exist.
    """
    job_dir = Path(job_dir)
    if not job_dir.is_dir():
        raise FileNotFoundError(f"outbox folder {job_dir} does not exist")
    return sorted(
        p
        for p in job_dir.iterdir()
        if p.is_file() and p.suffix == RESULT_SUFFIX and not p.name.startswith(TEMP_PREFIX)
    )


def acknowledge(path: str | Path) -> None:
    """The peer stored ``path``: delete it, durably, so it is never sent again."""
    path = Path(path)
    path.unlink()
    fsync_directory(path.parent)


def remove_if_empty(job_dir: str | Path) -> bool:
    """Remove a job's outbox folder once every result was acknowledged; True if it is gone.

    A folder that still holds files (a FAILED job's unsent results) is kept for inspection.
    """
    job_dir = Path(job_dir)
    try:
        job_dir.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    fsync_directory(job_dir.parent)
    return True


class Outbox:
    """The ``outbox`` folder of one node.

    Parameters
    ----------
    root
        ``<storage_dir>/outbox`` (see :meth:`for_storage_dir`); created if missing.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        make_private_dirs(self.root)

    @classmethod
    def for_storage_dir(cls, storage_dir: str | Path) -> Outbox:
        """The outbox under ``<storage_dir>/outbox``."""
        return cls(StorageLayout(Path(storage_dir)).outbox)

    @classmethod
    def kept_results(cls, storage_dir: str | Path) -> Outbox:
        """The kept copies under ``<storage_dir>/results`` (one folder per job, as the outbox;
        the files there are never sent from, only copied into the outbox)."""
        return cls(StorageLayout(Path(storage_dir)).results)

    def job_dir(self, job_id: int) -> Path:
        """Where job ``job_id``'s results wait (whether or not the folder exists yet)."""
        if job_id < 1:
            raise ValueError(f"job ids start at 1, got {job_id}")
        return self.root / str(job_id)

    def prepare(self, job_id: int) -> Path:
        """An empty folder for the job's results; leftovers of an interrupted run are removed."""
        job_dir = self.job_dir(job_id)
        if job_dir.exists():
            logger.info("job %d: removing results of an interrupted earlier run", job_id)
            shutil.rmtree(job_dir)
        job_dir.mkdir(mode=PRIVATE_DIR_MODE)
        os.chmod(job_dir, PRIVATE_DIR_MODE)  # not left to the umask: results are patient data
        fsync_directory(self.root)
        return job_dir

    def refill(self, job_id: int, files: list[Path]) -> Path:
        """Make the job's folder hold exactly copies of ``files`` (same names, same order).

        How the node fills the outbox from the kept copy of a job's results (``results/<job>``),
        after an analysis and for an operator's ``jobs resend``: the objects sent are always the
        bytes written once, so a resend can never put other content under a sent UID.
        """
        job_dir = self.prepare(job_id)
        for source in files:
            if source.suffix != RESULT_SUFFIX or source.name.startswith(TEMP_PREFIX):
                raise ValueError(f"{source} is not a result file")
            write_atomic(job_dir / source.name, source.read_bytes(), mode=PRIVATE_FILE_MODE)
        return job_dir

    def add(self, job_id: int, dataset: Dataset, name: str) -> Path:
        """Write ``dataset`` as the job's next result file (DICOM Part 10, fsynced).

        Parameters
        ----------
        job_id
            The job; :meth:`prepare` must have made its folder.
        dataset
            A complete SOP instance with file meta (highdicom objects have it).
        name
            A short file-name stem such as ``"seg"``; the file becomes ``NN-<name>.dcm``.

        Returns
        -------
        Path
            The file's final path.
        """
        if not name or "/" in name or name.startswith(TEMP_PREFIX):
            raise ValueError(f"result name must be a plain file-name stem, got {name!r}")
        job_dir = self.job_dir(job_id)
        if not job_dir.is_dir():
            raise FileNotFoundError(
                f"outbox folder {job_dir} does not exist; call prepare({job_id}) first"
            )
        index = sum(1 for p in job_dir.iterdir() if not p.name.startswith(TEMP_PREFIX))
        final = job_dir / f"{index:02d}-{name}{RESULT_SUFFIX}"
        # write_atomic's temporary name starts with TEMP_PREFIX, so it is never pending.
        write_atomic(
            final,
            lambda handle: dcmwrite(handle, dataset, enforce_file_format=True),
            mode=PRIVATE_FILE_MODE,
        )
        logger.debug(
            "job %d: result %s written (SOP instance %s)",
            job_id,
            final.name,
            dataset.SOPInstanceUID,
        )
        return final
