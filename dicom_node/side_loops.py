"""The loops beside the pipeline: notifications and retention.

Neither may ever delay results to the PACS, so each has its own thread (run, like the pipeline's
loops, under :meth:`dicom_node.service.NodeService._run_loop`, which survives and backs off from
a failed round) and its own :class:`~dicom_node.health.LoopMonitor` (``/healthz`` parts
``notifying`` and ``retention``). The service builds them; this module holds what one round of
each does, and the audit records of the sender loop's deliveries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

from dicom_node.audit import AuditEvent, AuditLog
from dicom_node.config import Peer
from dicom_node.health import LoopMonitor
from dicom_node.jobs import Job
from dicom_node.notifications.notifier import Notifier
from dicom_node.retention import Retention
from dicom_node.sender import SendOutcome, SendOutcomeKind

#: Longest idle wait of the notifier loop; :meth:`NotifierLoop.wake` normally cuts it short.
NOTIFIER_IDLE_WAIT_S: Final[float] = 1.0


class NotifierLoop:
    """Posts the due notifications, then waits for :meth:`wake` (or a second).

    Parameters
    ----------
    notifier:
        The node's notifier (queue and targets).
    monitor:
        The ``notifying`` loop's monitor.
    stopping:
        Set when the node stops; a round stops between two posts.
    """

    def __init__(self, notifier: Notifier, monitor: LoopMonitor, stopping: threading.Event) -> None:
        self.notifier = notifier
        self._monitor = monitor
        self._stopping = stopping
        self._ready = threading.Event()

    def wake(self) -> None:
        """New notifications were queued (or the node stops): start a round now."""
        self._ready.set()

    def round(self) -> None:
        """One round: post every due notification, then wait for the next one."""
        with self._monitor.busy("posting notifications"):
            self.notifier.deliver_due(self._stopping.is_set)
        self._ready.wait(NOTIFIER_IDLE_WAIT_S)
        self._ready.clear()


class RetentionLoop:
    """Runs :meth:`Retention.run_once` every ``storage.retention_interval_s``.

    The loop itself comes round every second (so ``/healthz`` sees it alive); the work runs
    when due. A failed round is retried by the service's loop runner with its backoff.

    Parameters
    ----------
    retention:
        What to remove.
    interval_s:
        ``storage.retention_interval_s``.
    clock:
        Wall-clock seconds (job end times are wall-clock).
    """

    def __init__(self, retention: Retention, interval_s: float, clock: Callable[[], float]):
        self.retention = retention
        self._interval_s = interval_s
        self._clock = clock
        self._next_at = 0.0

    def round(self) -> None:
        """One round: remove what expired, if a run is due."""
        if time.monotonic() < self._next_at:
            return
        self.retention.run_once(self._clock())
        self._next_at = time.monotonic() + self._interval_s


def audit_send(
    audit: AuditLog, our_ae_title: str, peer: Peer | None, job: Job, outcome: SendOutcome
) -> None:
    """results_sent for what the peer acknowledged, results_refused when an attempt failed."""
    common: dict[str, str | None] = {
        "calling_ae": our_ae_title,
        "called_ae": peer.ae_title if peer is not None else job.calling_ae,
        "peer_address": f"{peer.host}:{peer.port}" if peer is not None else None,
        "study_instance_uid": job.study_instance_uid,
        "series_instance_uid": job.series_instance_uid,
    }
    sent = [r.sop_instance_uid for r in outcome.results if r.acknowledged and r.sop_instance_uid]
    if sent:
        audit.record(
            AuditEvent.RESULTS_SENT,
            sop_instance_uids=sent,
            status=0,
            reason=f"job {job.id}, result version {job.result_version}",
            **common,
        )
    if outcome.kind is not SendOutcomeKind.SENT:
        codes = [r.status.code for r in outcome.results if r.status and not r.acknowledged]
        audit.record(
            AuditEvent.RESULTS_REFUSED,
            sop_instance_uids=[
                r.sop_instance_uid
                for r in outcome.results
                if not r.acknowledged and r.sop_instance_uid
            ],
            status=codes[0] if codes else outcome.kind.value,
            reason=f"job {job.id}: {outcome.reason}",
            **common,
        )
