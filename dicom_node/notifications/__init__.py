"""Notifications: a push to a RIS / worklist / messaging hook when a result is ready.

``messages`` builds what is posted (DESIGN.md's JSON message, or a FHIR R4 DiagnosticReport
validated with fhir.resources); ``queue`` keeps each pending post on disk and delivers it with
retries in the node's own notifier loop, so a slow or failing endpoint never delays results to
the PACS and a restart loses no notification.
"""

from dicom_node.notifications.messages import build_fhir_report, build_json_message, wants
from dicom_node.notifications.queue import (
    DeliveryOutcome,
    Notification,
    NotificationQueue,
    deliver,
)

__all__ = [
    "DeliveryOutcome",
    "Notification",
    "NotificationQueue",
    "build_fhir_report",
    "build_json_message",
    "deliver",
    "wants",
]
