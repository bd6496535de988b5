"""The notifier: turns a finished result into pending posts and delivers the due ones.

The service calls :meth:`Notifier.enqueue` when a job's result.json is written (one file write
per configured target that wants the result) and :meth:`Notifier.deliver_due` from its own
notifier loop. Retries follow the ``sender:`` settings (exponential backoff; give up after
``max_attempts`` if set, or ``give_up_after_hours`` after the post was queued), as results to the
PACS do. Every attempt is a ``notification_sent`` line of the audit trail
(:func:`audit_notification_sent`).
"""

from __future__ import annotations

import datetime
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from pydicom import Dataset

from dicom_node.audit import AuditEvent, AuditLog
from dicom_node.config import NotificationTarget, SenderSection
from dicom_node.notifications.messages import build_fhir_report, build_json_message, wants
from dicom_node.notifications.queue import (
    DeliveryKind,
    DeliveryOutcome,
    Notification,
    NotificationQueue,
    deliver,
)
from dicom_node.sender import backoff_delay

logger = logging.getLogger(__name__)

CONTENT_TYPES: Final[dict[str, str]] = {
    "json": "application/json",
    "fhir": "application/fhir+json",
}


def audit_notification_sent(
    audit: AuditLog, ae_title: str | None, notification: Notification, outcome: DeliveryOutcome
) -> None:
    """The audit trail's ``notification_sent`` record of one delivery attempt (DESIGN.md fields).

    HTTP has no AE titles: ``calling_ae`` is ours (the node sends), ``called_ae`` is null and
    ``peer_address`` the target's URL. ``status`` is ``sent``, ``retry`` (will be tried again)
    or ``failed`` (given up); ``reason`` names the job and the result version the post is about
    and the endpoint's answer. No patient data: the body is not recorded.
    """
    audit.record(
        AuditEvent.NOTIFICATION_SENT,
        calling_ae=ae_title,
        called_ae=None,
        peer_address=notification.url,
        study_instance_uid=notification.study_instance_uid,
        series_instance_uid=notification.series_instance_uid,
        status=outcome.kind.value,
        reason=(
            f"job {notification.job_id}: result version {notification.result_version}, "
            f"{outcome.reason}"
        ),
    )


class Notifier:
    """Pending notifications of one node (see the module docstring).

    Parameters
    ----------
    targets:
        ``notifications:`` of the config.
    queue:
        Where pending posts wait.
    retries:
        ``sender:`` of the config.
    clock:
        Epoch seconds (retry schedule).
    post:
        One delivery attempt (:func:`dicom_node.notifications.queue.deliver`; tests may pass
        another real transport).
    audit, ae_title:
        The node's audit trail and AE title; ``None``: attempts are not audited (a notifier
        outside a node).
    """

    def __init__(
        self,
        targets: Sequence[NotificationTarget],
        queue: NotificationQueue,
        retries: SenderSection,
        clock: Callable[[], float] = time.time,
        post: Callable[[Notification], DeliveryOutcome] = deliver,
        *,
        audit: AuditLog | None = None,
        ae_title: str | None = None,
    ) -> None:
        self.targets = tuple(targets)
        self.queue = queue
        self.retries = retries
        self._clock = clock
        self._post = post
        self._rng = random.Random()
        self._audit = audit
        self._ae_title = ae_title

    def _audited(self, notification: Notification, outcome: DeliveryOutcome) -> None:
        if self._audit is not None:
            audit_notification_sent(self._audit, self._ae_title, notification, outcome)

    def enqueue(self, job_id: int, result: Mapping[str, Any], source: Dataset) -> int:
        """Queue one post per target that wants ``result``; returns how many were queued."""
        issued = datetime.datetime.fromtimestamp(self._clock(), datetime.timezone.utc)
        queued = 0
        for index, target in enumerate(self.targets):
            if not wants(target.send_on, result):
                continue
            message = (
                build_fhir_report(result, source, issued=issued)
                if target.format == "fhir"
                else build_json_message(result, source)
            )
            self.queue.enqueue(
                Notification(
                    name=f"{job_id:010d}-{index:02d}",
                    job_id=job_id,
                    url=target.url,
                    content_type=CONTENT_TYPES[target.format],
                    body=json.dumps(message),
                    study_instance_uid=str(result["study_instance_uid"]),
                    series_instance_uid=str(result["series_instance_uid"]),
                    result_version=int(result["result_version"]),
                    queued_at=self._clock(),
                    timeout_s=target.timeout_s,
                )
            )
            queued += 1
        return queued

    def deliver_due(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Try every due notification once; returns how many were delivered."""
        delivered = 0
        for notification in self.queue.due(self._clock()):
            if should_stop():
                break
            outcome = self._post(notification)
            if outcome.kind is DeliveryKind.SENT:
                self.queue.remove(notification)
                delivered += 1
                logger.info(
                    "job %d: notification delivered to %s (%s)",
                    notification.job_id,
                    notification.url,
                    outcome.reason,
                )
                self._audited(notification, outcome)
                continue
            attempt = notification.attempts + 1
            delay = backoff_delay(attempt, self.retries, self._rng)
            if outcome.kind is DeliveryKind.FAILED or self._give_up(notification, attempt, delay):
                self.queue.remove(notification)
                logger.error(
                    "job %d: notification to %s given up after %d attempt(s): %s",
                    notification.job_id,
                    notification.url,
                    attempt,
                    outcome.reason,
                )
                self._audited(
                    notification,
                    DeliveryOutcome(DeliveryKind.FAILED, outcome.http_status, outcome.reason),
                )
                continue
            self.queue.reschedule(notification, self._clock() + delay, outcome.reason)
            logger.warning(
                "job %d: notification to %s failed (attempt %d: %s); retrying in %.1f s",
                notification.job_id,
                notification.url,
                attempt,
                outcome.reason,
                delay,
            )
            self._audited(notification, outcome)
        return delivered

    def _give_up(self, notification: Notification, attempt: int, delay: float) -> bool:
        """The sender's rule: after ``max_attempts`` if set, or when the next attempt would
        come more than ``give_up_after_hours`` after the post was queued."""
        if self.retries.max_attempts is not None and attempt >= self.retries.max_attempts:
            return True
        horizon_s = self.retries.give_up_after_hours * 3600.0
        return self._clock() + delay - notification.queued_at > horizon_s
