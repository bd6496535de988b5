"""Pending notifications on disk, and one delivery attempt (HTTP POST) of each.

Each pending notification is one JSON file under ``<storage_dir>/notifications/`` holding the
exact bytes to post, the target and the retry state. It is written (atomically, fsynced) when
the job's results are ready and removed only once the endpoint answered 2xx or the attempts
ran out, so a restart, a crash or an endpoint that is down for an hour loses nothing. The
notifier loop of the service (:meth:`dicom_node.service.NodeService._notifier_round`) walks
the due files; it runs on its own thread, so results to the PACS never wait for it.

What is retried: connection errors, timeouts, HTTP 408, 429 and 5xx (the endpoint may recover).
Any other 4xx is permanent (the endpoint refuses this message; resending it changes nothing).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Final

from dicom_node.storage import PRIVATE_FILE_MODE, make_private_dirs
from ichnet_core.durable import write_atomic

logger = logging.getLogger(__name__)

#: Suffix of a pending notification file; a file that cannot be read is renamed to ``.bad``.
PENDING_SUFFIX: Final[str] = ".json"
BAD_SUFFIX: Final[str] = ".bad"
#: HTTP statuses worth retrying besides 5xx: Request Timeout, Too Many Requests.
RETRYABLE_STATUSES: Final[frozenset[int]] = frozenset({408, 429})
USER_AGENT: Final[str] = "ichnet-node"


@dataclass(frozen=True)
class Notification:
    """One pending post.

    Attributes
    ----------
    name:
        File stem in the queue folder: ``<job id>-<target index>``.
    body:
        The exact bytes to post (UTF-8 JSON).
    attempts:
        Failed attempts so far.
    next_attempt_at:
        Epoch seconds before which it is not retried.
    result_version:
        The result's ``result_version`` (for the audit trail; 1 in files an earlier version
        queued).
    queued_at:
        Epoch seconds when it was queued (``sender.give_up_after_hours`` counts from here; 0
        in files an earlier version queued, which therefore give up at their next failure).
    """

    name: str
    job_id: int
    url: str
    content_type: str
    body: str
    study_instance_uid: str
    series_instance_uid: str
    timeout_s: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""
    result_version: int = 1
    queued_at: float = 0.0


class DeliveryKind(str, Enum):
    """How one attempt ended."""

    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class DeliveryOutcome:
    """The end of one attempt: kind, the HTTP status if one came back, and why."""

    kind: DeliveryKind
    http_status: int | None
    reason: str


def deliver(notification: Notification) -> DeliveryOutcome:
    """POST ``notification`` once; never raises (every failure is an outcome)."""
    request = urllib.request.Request(
        notification.url,
        data=notification.body.encode("utf-8"),
        method="POST",
        headers={"Content-Type": notification.content_type, "User-Agent": USER_AGENT},
    )
    try:
        with urllib.request.urlopen(request, timeout=notification.timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
        kind = (
            DeliveryKind.RETRY
            if status >= 500 or status in RETRYABLE_STATUSES
            else DeliveryKind.FAILED
        )
        return DeliveryOutcome(kind, status, f"HTTP {status} {exc.reason}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return DeliveryOutcome(DeliveryKind.RETRY, None, f"{type(exc).__name__}: {reason}")
    if 200 <= status < 300:
        return DeliveryOutcome(DeliveryKind.SENT, status, f"HTTP {status}")
    return DeliveryOutcome(DeliveryKind.FAILED, status, f"HTTP {status} is not a success")


class NotificationQueue:
    """The folder of pending notifications (see the module docstring).

    Parameters
    ----------
    directory:
        ``StorageLayout.notifications``; created on first use.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}{PENDING_SUFFIX}"

    def _write(self, notification: Notification) -> None:
        # Pending posts hold patient-related data (DESIGN.md: folders 0700, files 0600).
        make_private_dirs(self.directory)
        data = json.dumps(asdict(notification), indent=1).encode("utf-8")
        write_atomic(self._path(notification.name), data, mode=PRIVATE_FILE_MODE)

    def enqueue(self, notification: Notification) -> None:
        """Store a new pending notification (a rerun of the job replaces its earlier one)."""
        self._write(notification)

    def pending(self) -> list[Notification]:
        """Every pending notification, oldest job first; unreadable files are set aside."""
        if not self.directory.is_dir():
            return []
        found: list[Notification] = []
        for path in sorted(self.directory.glob(f"*{PENDING_SUFFIX}")):
            try:
                found.append(Notification(**json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError) as exc:
                logger.error("notification file %s is unreadable (%s); set aside", path, exc)
                path.rename(path.with_suffix(BAD_SUFFIX))
        return found

    def due(self, now: float) -> list[Notification]:
        """Pending notifications whose next attempt is due at ``now``."""
        return [n for n in self.pending() if n.next_attempt_at <= now]

    def remove(self, notification: Notification) -> None:
        """Forget a notification (delivered, or given up on)."""
        self._path(notification.name).unlink(missing_ok=True)

    def reschedule(self, notification: Notification, next_attempt_at: float, error: str) -> None:
        """Record one more failed attempt and when to try again."""
        self._write(
            replace(
                notification,
                attempts=notification.attempts + 1,
                next_attempt_at=next_attempt_at,
                last_error=error,
            )
        )
