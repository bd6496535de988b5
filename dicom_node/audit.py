"""The audit trail: ``<storage_dir>/audit/audit.jsonl``, one JSON object per line.

A hospital's security review asks "who sent what, when, and what did the node do with it";
logs answer that only while they are kept and only in prose. The audit trail is the record with
fixed fields (../shared/DESIGN.md "Files under storage_dir"):

``time`` (ISO 8601 UTC), ``event`` (:class:`AuditEvent`), ``calling_ae``, ``called_ae``,
``peer_address``, the UIDs the event concerns (``study_instance_uid``,
``series_instance_uid``, ``sop_instance_uid`` or, for result objects, ``sop_instance_uids``),
``status`` and ``reason``. Keys that do not apply are ``null``; UID keys appear only when the
event concerns them. Job events name their job in ``reason`` (``job 12: ...``).

What never enters it: patient names, birth dates or any other attribute of a data set. The
record is built from keyword arguments only (no data set is ever passed in), so there is no
path by which a PatientName could reach the file.

Every part of the node writes through one :class:`AuditLog` (the SCP's handlers, the transport
guard, the job store, the sender, the CLI's operator commands), so the events and their fields
cannot drift apart. Lines are appended with one ``write`` on an ``O_APPEND`` descriptor, so
lines of concurrent threads (and of an ``ichnet-node jobs`` command running beside the node)
never interleave. They are not fsynced one by one: a killed process loses nothing already
written, a power cut at worst the last moments (as the job queue's per-instance rows; the
instance files themselves are fsynced before success is returned). An audit line that cannot
be written is logged as an error and does not refuse the work it describes: the node's
storage-protection watermark refuses work well before the disk is full.

With ``logging.audit_syslog`` each record is also sent as an RFC 5424 syslog message
(:mod:`dicom_node.log_format`) after it was written to the file; the file stays the complete
record, the collector a copy for the hospital's SIEM or audit repository.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from dicom_node.config import AuditSyslogSection
from dicom_node.layout import StorageLayout
from dicom_node.log_format import audit_severity, audit_syslog_logger
from dicom_node.storage import PRIVATE_FILE_MODE, make_private_dirs

logger = logging.getLogger(__name__)


class AuditEvent(str, Enum):
    """The events of the audit trail (DESIGN.md); the value is what the ``event`` key holds."""

    ASSOCIATION_ACCEPTED = "association_accepted"
    ASSOCIATION_REJECTED = "association_rejected"
    INSTANCE_STORED = "instance_stored"
    INSTANCE_REFUSED = "instance_refused"
    JOB_DONE = "job_done"
    JOB_FAILED = "job_failed"
    JOB_SKIPPED = "job_skipped"
    RESULTS_SENT = "results_sent"
    RESULTS_REFUSED = "results_refused"
    NOTIFICATION_SENT = "notification_sent"


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class AuditLog:
    """Appends audit records to one file; safe to share between threads.

    Parameters
    ----------
    path:
        The audit file, normally ``<storage_dir>/audit/audit.jsonl`` (:meth:`for_storage_dir`).
        Its folder is created 0700 and the file 0600 on the first record.
    clock:
        Time source of the ``time`` key (timezone-aware UTC).
    syslog:
        Also send each record there (:func:`dicom_node.log_format.audit_syslog_logger`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], datetime] = _utc_now,
        syslog: logging.Logger | None = None,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._syslog = syslog

    @classmethod
    def for_storage_dir(
        cls, storage_dir: str | Path, syslog: AuditSyslogSection | None = None
    ) -> AuditLog:
        """The audit trail of the node whose ``node.storage_dir`` is ``storage_dir``, also sent
        to ``syslog`` (the config's ``logging.audit_syslog``) when given."""
        sender = (
            audit_syslog_logger(syslog.host, syslog.port, syslog.facility, syslog.app_name)
            if syslog is not None
            else None
        )
        return cls(StorageLayout(Path(storage_dir)).audit_log, syslog=sender)

    def record(
        self,
        event: AuditEvent,
        *,
        calling_ae: str | None = None,
        called_ae: str | None = None,
        peer_address: str | None = None,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
        sop_instance_uids: Sequence[str] | None = None,
        status: str | int | None = None,
        reason: str | None = None,
    ) -> None:
        """Append one record. Never raises: a failure is logged (see the module docstring).

        Parameters
        ----------
        event:
            What happened.
        calling_ae, called_ae:
            The association's AE titles (for results sent: ours and the peer's).
        peer_address:
            The other side's network address (``host`` or ``host:port``).
        study_instance_uid, series_instance_uid, sop_instance_uid, sop_instance_uids:
            The UIDs the event concerns; only those given appear in the line.
        status:
            A DIMSE status (int, written as ``0xXXXX``), a job state or an A-ASSOCIATE-RJ
            reason name.
        reason:
            Why, in one line (a refusal's message, a job's reason).
        """
        entry: dict[str, object] = {
            "time": self._clock().astimezone(timezone.utc).isoformat(timespec="milliseconds"),
            "event": AuditEvent(event).value,
            "calling_ae": calling_ae,
            "called_ae": called_ae,
            "peer_address": peer_address,
        }
        uids = {
            "study_instance_uid": study_instance_uid,
            "series_instance_uid": series_instance_uid,
            "sop_instance_uid": sop_instance_uid,
        }
        entry.update({key: value for key, value in uids.items() if value is not None})
        if sop_instance_uids is not None:
            entry["sop_instance_uids"] = list(sop_instance_uids)
        entry["status"] = f"0x{status:04X}" if isinstance(status, int) else status
        entry["reason"] = reason
        text = json.dumps(entry, ensure_ascii=False)
        try:
            with self._lock:
                self._append((text + "\n").encode("utf-8"))
        except OSError as exc:
            logger.error("cannot write the audit trail %s (%s): lost %s", self.path, exc, text)
        if self._syslog is not None:
            # SysLogHandler reports its own send errors (handleError) and never raises.
            event_name = str(entry["event"])
            self._syslog.log(audit_severity(event_name), "%s", text, extra={"msgid": event_name})

    def _append(self, line: bytes) -> None:
        if not self.path.parent.is_dir():
            make_private_dirs(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def read_audit(path: str | Path) -> list[dict[str, object]]:
    """Every record of an audit file, oldest first (for operators' tools and tests)."""
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
