"""What a finished analysis leaves under ``storage_dir``, and in which order.

One job's results end up in four places: the kept copy ``results/<job>/`` (the result objects
this job's peer gets, ``result.json`` and the status page's ``thumbnail.png``), the outbox
``outbox/<job>/`` (filled from the kept copy, emptied as the peer acknowledges), the prior index
``priors.sqlite3`` (for later follow-up comparisons) and, when ``notifications:`` is set, the
pending posts under ``notifications/``. The order is what makes a crash harmless:

* the kept copy is written first and the outbox refilled from it, so a later ``jobs resend``
  sends the very same bytes (a UID once sent never carries other content);
* everything happens while the job is RUNNING; a crash before SENDING reruns the job, whose
  :meth:`~dicom_node.outbox.Outbox.prepare` clears both folders (the thumbnail included), and a
  rerun re-queues its notifications under the same names.

Every file is private (0600 in 0700 folders), as everything under ``storage_dir``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

from dicom_node.config import ResultOutput
from dicom_node.layout import StorageLayout
from dicom_node.notifications.notifier import Notifier
from dicom_node.outbox import Outbox, pending_files
from dicom_node.priors import PriorIndex, remember_result
from dicom_node.results import RESULT_JSON_NAME, write_result
from dicom_node.status_page import THUMBNAIL_NAME, render_thumbnail
from dicom_node.storage import PRIVATE_FILE_MODE
from dicom_node.workflow import SeriesAnalysis
from ichnet_core.durable import write_atomic

logger = logging.getLogger(__name__)


class ResultPublisher:
    """Writes one job's results to the kept copy, the outbox, the prior index and the
    notification queue (see the module docstring).

    Parameters
    ----------
    layout:
        The node's storage layout.
    outbox, kept_results:
        ``outbox/`` and ``results/`` (:meth:`Outbox.kept_results`).
    priors:
        The prior index.
    notifier:
        Queues ``notifications:`` posts; ``None`` or one without targets queues none.
    """

    def __init__(
        self,
        layout: StorageLayout,
        outbox: Outbox,
        kept_results: Outbox,
        priors: PriorIndex,
        notifier: Notifier | None = None,
    ) -> None:
        self.layout = layout
        self.outbox = outbox
        self.kept_results = kept_results
        self.priors = priors
        self.notifier = notifier

    def publish(
        self, job_id: int, analysis: SeriesAnalysis, outputs: Sequence[ResultOutput]
    ) -> bool:
        """Write job ``job_id``'s results; the objects the peer gets are ``outputs``.

        Returns
        -------
        bool
            Whether notifications were queued (the caller wakes its notifier loop).
        """
        self.kept_results.prepare(job_id)
        if "seg" in outputs:
            self.kept_results.add(job_id, analysis.seg, "seg")
        if "sr" in outputs:
            self.kept_results.add(job_id, analysis.sr, "sr")
        for number, image in enumerate(analysis.key_images, start=1):
            self.kept_results.add(job_id, image, f"sc{number}")
        job_results = self.layout.result_dir(job_id)
        write_result(job_results / RESULT_JSON_NAME, analysis.result)
        thumbnail = io.BytesIO()
        render_thumbnail(analysis.volume, analysis.prediction).save(thumbnail, format="PNG")
        write_atomic(job_results / THUMBNAIL_NAME, thumbnail.getvalue(), mode=PRIVATE_FILE_MODE)
        self.outbox.refill(job_id, pending_files(self.kept_results.job_dir(job_id)))
        remember_result(self.priors, analysis.volume.datasets[0], analysis.sr, analysis.volumes)
        return self._queue_notifications(job_id, analysis)

    def _queue_notifications(self, job_id: int, analysis: SeriesAnalysis) -> bool:
        """A failure here is logged and never holds back the results."""
        if self.notifier is None or not self.notifier.targets:
            return False
        try:
            return self.notifier.enqueue(job_id, analysis.result, analysis.volume.datasets[0]) > 0
        except Exception:
            logger.exception("job %d: notifications could not be queued", job_id)
            return False
