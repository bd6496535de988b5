"""The notifier: turns a finished result into pending posts and delivers the due ones.

The service calls :meth:`Notifier.enqueue` when a job's result.json is written (one file write
per configured target that wants the result) and :meth:`Notifier.deliver_due` from its own
notifier loop. Retries follow the ``sender:`` settings (``max_attempts``, exponential backoff),
as results to the PACS do.
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


def audit_notification_sent(notification: Notification, outcome: DeliveryOutcome) -> None:
    """The audit trail's ``notification_sent`` event (DESIGN.md), one call site.

    The audit module (``<storage_dir>/audit/audit.jsonl``, issue 10) is not on main yet: until
    it is, this writes the same fields as one log line; wire it here when it lands.
    """
    logger.info(
        "audit notification_sent: url=%s study=%s series=%s status=%s reason=%s",
        notification.url,
        notification.study_instance_uid,
        notification.series_instance_uid,
        outcome.kind.value,
        outcome.reason,
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
    """

    def __init__(
        self,
        targets: Sequence[NotificationTarget],
        queue: NotificationQueue,
        retries: SenderSection,
        clock: Callable[[], float] = time.time,
        post: Callable[[Notification], DeliveryOutcome] = deliver,
    ) -> None:
        self.targets = tuple(targets)
        self.queue = queue
        self.retries = retries
        self._clock = clock
        self._post = post
        self._rng = random.Random()

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
                audit_notification_sent(notification, outcome)
                continue
            attempt = notification.attempts + 1
            if outcome.kind is DeliveryKind.FAILED or attempt >= self.retries.max_attempts:
                self.queue.remove(notification)
                logger.error(
                    "job %d: notification to %s given up after %d attempt(s): %s",
                    notification.job_id,
                    notification.url,
                    attempt,
                    outcome.reason,
                )
                audit_notification_sent(
                    notification,
                    DeliveryOutcome(DeliveryKind.FAILED, outcome.http_status, outcome.reason),
                )
                continue
            delay = backoff_delay(attempt, self.retries, self._rng)
            self.queue.reschedule(notification, self._clock() + delay, outcome.reason)
            logger.warning(
                "job %d: notification to %s failed (attempt %d: %s); retrying in %.1f s",
                notification.job_id,
                notification.url,
                attempt,
                outcome.reason,
                delay,
            )
            audit_notification_sent(notification, outcome)
        return delivered
