"""Storage protection: below ``storage.min_free_bytes`` of free disk the node takes no new data.

A node whose disk fills up fails in the worst way: instances half written, a job database that
cannot commit, results that cannot be written, and a PACS that keeps sending. So the node stops
taking data while there is still room to finish what it holds:

* a new association is rejected with A-ASSOCIATE-RJ *rejected-transient*, presentation
  service provider, *local limit exceeded* (PS3.8 7.1.1.9): a well-behaved sender retries later;
* a C-STORE on an association that is already open is answered ``0xA700`` Refused: Out of
  Resources (PS3.4 B.2.3) with an Error Comment naming the watermark, when storing the data set
  would leave less than ``min_free_bytes`` free.

The free space is read from the file system (``statvfs`` through :func:`shutil.disk_usage`) at
every check, so the node accepts again as soon as space is freed (retention, an admin), without
a restart. The check costs one system call; the C-STORE path makes it once per instance.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Final

from dicom_node.associations import reject_association
from dicom_node.audit import AuditLog
from dicom_node.status import (
    OutOfResourcesError,
)

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from dicom_node.metrics import NodeMetrics

logger = logging.getLogger(__name__)

#: Metrics label and audit status of associations rejected for lack of disk space.
LOW_DISK_REASON: Final[str] = "storage_below_min_free_bytes"


class LowDiskSpaceError(OutOfResourcesError):
    """Storing the instance would leave less than ``storage.min_free_bytes`` free (0xA700)."""


class FreeSpaceGuard:
    """Decides, from the file system's free space, whether the node may take more data.

    Parameters
    ----------
    storage_dir:
        ``node.storage_dir``: the file system whose free space counts.
    min_free_bytes:
        ``storage.min_free_bytes``; 0 turns the guard off.
    metrics, audit:
        Where rejected associations are counted and recorded (``None``: nowhere).
    """

    def __init__(
        self,
        storage_dir: Path,
        min_free_bytes: int,
        *,
        metrics: NodeMetrics | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.storage_dir = Path(storage_dir)
        self.min_free_bytes = min_free_bytes
        self._metrics = metrics
        self._audit = audit

    def free_bytes(self) -> int:
        """Free bytes on ``storage_dir``'s file system for this (unprivileged) process."""
        return int(shutil.disk_usage(self.storage_dir).free)

    def _shortfall(self, incoming_bytes: int) -> str | None:
        """Why ``incoming_bytes`` more cannot be taken now, or ``None`` when they can."""
        if self.min_free_bytes <= 0:
            return None
        try:
            free = self.free_bytes()
        except OSError as exc:
            # Not knowing is not "full": the write itself still fails cleanly with 0xA700.
            logger.warning("cannot read free space of %s: %s", self.storage_dir, exc)
            return None
        if free - incoming_bytes >= self.min_free_bytes:
            return None
        return (
            f"{free} bytes free on the file system of {self.storage_dir}"
            + (f", {incoming_bytes} more to store" if incoming_bytes else "")
            + f": below storage.min_free_bytes {self.min_free_bytes}"
        )

    def problem(self) -> str | None:
        """Why no new data is taken now (for ``/healthz``), or ``None``."""
        return self._shortfall(0)

    def check_store(self, n_bytes: int) -> None:
        """Refuse a C-STORE whose data set would take free space below the watermark.

        Raises
        ------
        LowDiskSpaceError
            With the free space and the watermark in the message.
        """
        problem = self._shortfall(n_bytes)
        if problem is not None:
            raise LowDiskSpaceError(
                problem, error_comment="storage below min_free_bytes, try again later"
            )

    def on_requested(self, event: Event) -> None:
        """``evt.EVT_REQUESTED``: reject a new association (transient) while space is low."""
        assoc = event.assoc
        if assoc.is_rejected or assoc.is_aborted:
            return  # an earlier check (the host check) already answered
        problem = self._shortfall(0)
        if problem is None:
            return
        reject_association(
            assoc,
            reason=LOW_DISK_REASON,
            problem=problem,
            metrics=self._metrics,
            audit=self._audit,
        )
