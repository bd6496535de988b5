"""Send a job's results back to its peer: one C-STORE SCU association, retries with backoff.

:meth:`ResultSender.send` sends every file still in a job's outbox folder (see
:mod:`dicom_node.outbox`) over ONE association and deletes each file only after the peer's
success or warning status for it, so an interrupted send resends only what is left.
:meth:`ResultSender.deliver` does that for a SENDING job and records the outcome in the
:class:`~dicom_node.jobs.JobStore`.

Failures are sorted into two kinds, because retrying a refusal that will never change only hides
it, and giving up on a busy PACS loses results:

* transient (try again later): no TCP connection, A-ASSOCIATE-RJ *rejected-transient*, no
  A-ASSOCIATE response, an association aborted or a C-STORE response missing (timeout, peer
  died), and C-STORE statuses that mean "not now": Refused: Out of Resources (A7xx), Resource
  Limitation (0213), Processing Failure (0110);
* permanent (FAILED at once, the reason names the peer and the status): A-ASSOCIATE-RJ
  *rejected-permanent* (e.g. our calling AE title is not known there), no presentation context
  accepted for the file's SOP Class, and every other failure status (Refused: SOP Class Not
  Supported 0122, Data Set Does Not Match SOP Class A9xx, Cannot Understand Cxxx, ...).

Warning statuses (B000, B006, B007, and the general 0107/0116) mean the peer stored the object:
they count as success and are logged. Status meanings are pynetdicom's tables
(:data:`pynetdicom.status.STORAGE_SERVICE_CLASS_STATUS`, PS3.4 B.2.3 and PS3.7 Annex C).

Transient failures back off exponentially: the n-th failed attempt waits
``min(initial_backoff_s * 2**(n-1), max_backoff_s)`` plus up to :data:`JITTER_FRACTION` of that
(so many jobs failing together do not retry in lockstep). The job is FAILED with the last reason
only when the next attempt would come more than ``give_up_after_hours`` (default 24 h: a PACS
outage of hours is survived) after it became SENDING, or after ``max_attempts`` if set.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import (
    STATUS_FAILURE,
    STATUS_SUCCESS,
    STATUS_WARNING,
    STORAGE_SERVICE_CLASS_STATUS,
    code_to_category,
)

from dicom_node.config import Peer, SenderSection
from dicom_node.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_node.jobs import Job, JobState, JobStore
from dicom_node.outbox import acknowledge, pending_files, remove_if_empty
from dicom_node.status import (
    ASSOCIATION_ACCEPTED,
    REFUSED_OUT_OF_RESOURCES_CODES,
    RejectResult,
    StoreStatus,
)

logger = logging.getLogger(__name__)

#: Random extra wait, as a fraction of the backoff, added to each retry delay.
JITTER_FRACTION = 0.1
#: Doublings beyond this cannot matter (2**60 times any positive initial backoff is beyond any
#: sane max_backoff_s); capping the exponent keeps the arithmetic finite for huge attempt counts.
_MAX_DOUBLINGS = 60
#: Transfer syntaxes proposed for uncompressed files: pynetdicom re-encodes between the two, so
#: a peer that only takes the default Implicit VR Little Endian (PS3.5 10.1) is still served.
UNCOMPRESSED_TRANSFER_SYNTAXES: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

#: Failure statuses besides Refused: Out of Resources that say "not now" rather than "never".
#: Processing Failure is often a PACS database hiccup: retried because the attempt count bounds
#: the cost and dropping results on a hiccup is worse.
_NOT_NOW: Final[frozenset[int]] = frozenset(
    {StoreStatus.RESOURCE_LIMITATION, StoreStatus.GENERAL_PROCESSING_FAILURE}
)


class StatusCategory(str, Enum):
    """What a C-STORE response status means for the sender."""

    SUCCESS = "success"
    #: Stored, with a remark (coercion, elements discarded, ...): counts as success.
    WARNING = "warning"
    #: Not stored now; retry later.
    TRANSIENT = "transient failure"
    #: Not stored and never will be as sent.
    PERMANENT = "permanent failure"


def classify_store_status(code: int) -> StatusCategory:
    """Sort a C-STORE response status into a :class:`StatusCategory`.

    Codes outside the standard's categories (a C-STORE response can be neither Pending nor
    Cancel) are permanent: a peer that answers nonsense will not answer better later.
    """
    category = code_to_category(code)
    if category == STATUS_SUCCESS:
        return StatusCategory.SUCCESS
    if category == STATUS_WARNING:
        return StatusCategory.WARNING
    if category == STATUS_FAILURE and (code in REFUSED_OUT_OF_RESOURCES_CODES or code in _NOT_NOW):
        return StatusCategory.TRANSIENT
    return StatusCategory.PERMANENT


@dataclass(frozen=True)
class PeerStatus:
    """A C-STORE response status as the peer sent it, with its standard meaning."""

    code: int
    #: pynetdicom's name for the code, e.g. ``"Refused: Out of Resources"``.
    meaning: str
    category: StatusCategory
    #: Error Comment (0000,0902) if the peer sent one.
    error_comment: str | None = None

    @classmethod
    def from_code(cls, code: int, error_comment: str | None = None) -> PeerStatus:
        """Name and classify ``code``."""
        meaning = STORAGE_SERVICE_CLASS_STATUS.get(code, (None, ""))[1]
        if not meaning:
            meaning = code_to_category(code)
        return cls(code, meaning, classify_store_status(code), error_comment)

    def __str__(self) -> str:
        text = f"{self.meaning} (0x{self.code:04X})"
        return f"{text}: {self.error_comment}" if self.error_comment else text


class SendOutcomeKind(str, Enum):
    """How a send attempt ended."""

    #: Every file in the outbox was acknowledged.
    SENT = "SENT"
    #: A transient failure; try again at ``next_attempt_at``.
    RETRY = "RETRY"
    #: A permanent failure, or the attempts are used up.
    FAILED = "FAILED"


@dataclass(frozen=True)
class FileResult:
    """What happened to one outbox file in one attempt."""

    path: Path
    sop_instance_uid: str | None
    #: The peer's response; ``None`` when the file got none (not sent, or no response).
    status: PeerStatus | None
    #: True once the peer stored it (success or warning) and the file was deleted.
    acknowledged: bool


@dataclass(frozen=True)
class SendOutcome:
    """The result of :meth:`ResultSender.send`."""

    kind: SendOutcomeKind
    #: Why it is RETRY or FAILED (names the peer and the status); ``None`` when SENT.
    reason: str | None
    #: Files acknowledged (and deleted) during this attempt, in sending order.
    sent_files: tuple[Path, ...]
    #: When to try again (RETRY only).
    next_attempt_at: float | None
    #: Per-file details of this attempt, in sending order.
    results: tuple[FileResult, ...] = ()


def backoff_delay(failed_attempts: int, settings: SenderSection, rng: random.Random) -> float:
    """Seconds to wait after the ``failed_attempts``-th failed attempt (1 = the first failure).

    ``min(initial_backoff_s * 2**(failed_attempts - 1), max_backoff_s)``, plus a uniform jitter
    of up to :data:`JITTER_FRACTION` of it.
    """
    if failed_attempts < 1:
        raise ValueError(f"failed_attempts counts from 1, got {failed_attempts}")
    doublings = min(failed_attempts - 1, _MAX_DOUBLINGS)
    base = min(settings.initial_backoff_s * 2.0**doublings, settings.max_backoff_s)
    return base * (1.0 + rng.uniform(0.0, JITTER_FRACTION))


def _describe_peer(peer: Peer) -> str:
    return f"peer {peer.ae_title} at {peer.host}:{peer.port}" + (" (TLS)" if peer.tls else "")


@dataclass(frozen=True)
class OutboxFile:
    """An outbox file as its file meta describes it (read without the data set)."""

    path: Path
    sop_class_uid: UID
    sop_instance_uid: UID
    transfer_syntax_uid: UID


def _read_meta(path: Path) -> OutboxFile:
    meta = read_file_meta_info(path)
    missing = [
        kw
        for kw in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
        if kw not in meta
    ]
    if missing:
        raise InvalidDicomError(f"{path} has no {', '.join(missing)} in its file meta")
    return OutboxFile(
        path,
        UID(meta.MediaStorageSOPClassUID),
        UID(meta.MediaStorageSOPInstanceUID),
        UID(meta.TransferSyntaxUID),
    )


def build_presentation_contexts(files: Iterable[OutboxFile]) -> list[PresentationContext]:
    """The presentation contexts to propose for ``files``.

    One context per SOP Class with both uncompressed little-endian syntaxes, plus one per
    (SOP Class, compressed transfer syntax) actually present: compressed data cannot be
    re-encoded on the fly, so each compressed syntax must be accepted on its own.
    """
    contexts: dict[tuple[UID, tuple[UID, ...]], PresentationContext] = {}
    for f in files:
        syntaxes = (
            UNCOMPRESSED_TRANSFER_SYNTAXES
            if f.transfer_syntax_uid in UNCOMPRESSED_TRANSFER_SYNTAXES
            else (f.transfer_syntax_uid,)
        )
        key = (f.sop_class_uid, syntaxes)
        if key not in contexts:
            contexts[key] = build_context(f.sop_class_uid, list(syntaxes))
    return list(contexts.values())


class _AssociationWatch:
    """What the wire showed while an association was being set up.

    The A-ASSOCIATE-RJ is taken from the received PDU (``EVT_PDU_RECV``) rather than from
    ``Association.acceptor.primitive``: when a peer closes the connection right after its
    rejection (dcmtk's ``storescp --refuse`` does), pynetdicom 3.0 may see the closed socket
    before handing the rejection to the association and then reports a bare abort. The PDU
    event fires as soon as the rejection is decoded, so the reason is never lost.
    """

    def __init__(self) -> None:
        self.connected = False
        self.rejection: A_ASSOCIATE_RJ | None = None

    def _on_conn_open(self, _event: Event) -> None:
        self.connected = True

    def _on_pdu_recv(self, event: Event) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            self.rejection = event.pdu

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_CONN_OPEN, self._on_conn_open), (evt.EVT_PDU_RECV, self._on_pdu_recv)]


def _describe_rejection(rj: A_ASSOCIATE_RJ) -> str:
    """``result: Rejected (Permanent), source: DUL service-user, reason: ...`` (PS3.8 9.3.4)."""
    try:
        return f"result: {rj.result_str}, source: {rj.source_str}, reason: {rj.reason_str}"
    except ValueError:  # values outside PS3.8 Table 9-21; pynetdicom cannot name them
        return f"result: {rj.result}, source: {rj.source}, reason: {rj.reason_diagnostic}"


class ResultSender:
    """C-STORE SCU that delivers outbox folders to peers.

    One instance per node; :meth:`send` / :meth:`deliver` are meant to be called from one
    sender thread (each call opens and closes its own association).

    Parameters
    ----------
    settings
        ``sender`` section of the config: ``initial_backoff_s``, ``max_backoff_s``,
        ``give_up_after_hours``, ``max_attempts``.
    our_ae_title
        Our node's AE title, the Calling AE Title of every association.
    connection_timeout_s
        TCP connect timeout.
    acse_timeout_s, dimse_timeout_s, network_timeout_s
        pynetdicom's association, message and idle timeouts (the node section's values).
    clock
        Time source for ``next_attempt_at`` (a fake clock in tests).
    rng
        Jitter source; a seeded :class:`random.Random` makes delays reproducible.
    tls_context
        Client TLS context (:func:`dicom_node.tls.client_context`: our certificate, the peers'
        CAs) for peers with ``tls: true``; the peer's certificate must name its ``host``.
    """

    def __init__(
        self,
        settings: SenderSection,
        our_ae_title: str,
        *,
        connection_timeout_s: float = 10.0,
        acse_timeout_s: float = 30.0,
        dimse_timeout_s: float = 60.0,
        network_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self._tls_context = tls_context
        self.our_ae_title = our_ae_title
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._ae = AE(ae_title=our_ae_title)
        # The same identity as the SCP's, so the peer's log names this software either way.
        self._ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        self._ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        self._ae.connection_timeout = connection_timeout_s
        self._ae.acse_timeout = acse_timeout_s
        self._ae.dimse_timeout = dimse_timeout_s
        self._ae.network_timeout = network_timeout_s

    # -- one attempt ------------------------------------------------------------------------

    def send(
        self,
        job_outbox_dir: str | Path,
        peer: Peer,
        *,
        previous_attempts: int = 0,
        sending_since: float | None = None,
    ) -> SendOutcome:
        """Send every file left in ``job_outbox_dir`` to ``peer`` over one association.

        Parameters
        ----------
        job_outbox_dir
            The job's outbox folder; acknowledged files are deleted from it.
        peer
            Where to send: Called AE Title ``peer.ae_title`` at ``peer.host:peer.port``.
        previous_attempts
            Failed attempts before this one (the job's ``attempts``); decides the backoff (and
            when to give up, with ``sender.max_attempts``).
        sending_since
            When the job became SENDING; transient failures are given up
            ``sender.give_up_after_hours`` later. ``None`` = now (a first attempt).

        Returns
        -------
        SendOutcome
            SENT, RETRY (with ``next_attempt_at``) or FAILED (with the reason).
        """
        job_outbox_dir = Path(job_outbox_dir)
        attempt = previous_attempts + 1
        since = self._clock() if sending_since is None else sending_since
        try:
            paths = pending_files(job_outbox_dir)
        except FileNotFoundError as exc:
            return self._failed(f"cannot send to {_describe_peer(peer)}: {exc}", ())
        if not paths:
            return SendOutcome(SendOutcomeKind.SENT, None, (), None)

        files: list[OutboxFile] = []
        unreadable: list[FileResult] = []
        for path in paths:
            try:
                files.append(_read_meta(path))
            except (InvalidDicomError, OSError) as exc:
                logger.error("outbox file %s is not a readable DICOM file: %s", path, exc)
                unreadable.append(FileResult(path, None, None, acknowledged=False))
        permanent = [f"{r.path.name}: not a readable DICOM file" for r in unreadable]
        if not files:
            return self._failed("; ".join(permanent), tuple(unreadable))

        if peer.tls and self._tls_context is None:
            return self._failed(
                f"{_describe_peer(peer)} is configured with tls: true but the node has no TLS "
                "client certificate (node.tls)",
                tuple(unreadable),
            )
        watch = _AssociationWatch()
        assoc = self._ae.associate(
            peer.host,
            peer.port,
            contexts=build_presentation_contexts(files),
            ae_title=peer.ae_title,
            evt_handlers=watch.handlers(),
            tls_args=(self._tls_context, peer.host) if peer.tls and self._tls_context else None,
        )
        if not assoc.is_established:
            reason, transient = self._association_failure(assoc, peer, watch)
            if transient and not permanent:
                return self._retry_or_fail(reason, attempt, since, ())
            return self._failed("; ".join([reason, *permanent]), tuple(unreadable))

        results: list[FileResult] = list(unreadable)
        transient_reason: str | None = None
        try:
            for f in files:
                if not assoc.is_established:
                    # The peer released or aborted after acknowledging the previous file.
                    transient_reason = (
                        f"{_describe_peer(peer)} ended the association before "
                        f"{f.path.name} was sent"
                    )
                    break
                result, failure, category = self._send_one(assoc, f, peer)
                results.append(result)
                if category is StatusCategory.TRANSIENT:
                    transient_reason = failure
                    break
                if category is StatusCategory.PERMANENT:
                    permanent.append(f"{f.path.name}: {failure}")
        finally:
            if assoc.is_established:
                assoc.release()

        sent = tuple(r.path for r in results if r.acknowledged)
        logger.info(
            "sent %d of %d result file(s) from %s to %s",
            len(sent),
            len(paths),
            job_outbox_dir,
            _describe_peer(peer),
        )
        if permanent:
            return self._failed("; ".join(permanent), tuple(results))
        if transient_reason is not None:
            return self._retry_or_fail(transient_reason, attempt, since, tuple(results))
        return SendOutcome(SendOutcomeKind.SENT, None, sent, None, tuple(results))

    def _send_one(
        self, assoc: Association, f: OutboxFile, peer: Peer
    ) -> tuple[FileResult, str | None, StatusCategory]:
        """C-STORE one file; delete it if the peer stored it."""
        where = _describe_peer(peer)
        try:
            dataset = dcmread(f.path)
        except (InvalidDicomError, OSError) as exc:
            reason = f"not a readable DICOM file ({exc})"
            return FileResult(f.path, None, None, False), reason, StatusCategory.PERMANENT
        try:
            rsp = assoc.send_c_store(dataset)
        except ValueError as exc:
            # pynetdicom: no accepted presentation context for this SOP Class / syntax, or the
            # data set cannot be encoded in the accepted one. Resending will not change that.
            reason = f"{where} cannot take {f.sop_class_uid.name} {f.sop_instance_uid}: {exc}"
            return (
                FileResult(f.path, f.sop_instance_uid, None, False),
                reason,
                StatusCategory.PERMANENT,
            )
        if "Status" not in rsp:
            reason = (
                f"no C-STORE response from {where} for {f.sop_class_uid.name} "
                f"{f.sop_instance_uid} (association aborted, connection lost or DIMSE timeout)"
            )
            return (
                FileResult(f.path, f.sop_instance_uid, None, False),
                reason,
                StatusCategory.TRANSIENT,
            )
        status = PeerStatus.from_code(int(rsp.Status), rsp.get("ErrorComment"))
        if status.category in (StatusCategory.SUCCESS, StatusCategory.WARNING):
            acknowledge(f.path)
            if status.category is StatusCategory.WARNING:
                logger.warning(
                    "%s stored %s %s with a warning: %s",
                    where,
                    f.sop_class_uid.name,
                    f.sop_instance_uid,
                    status,
                )
            return FileResult(f.path, f.sop_instance_uid, status, True), None, status.category
        reason = f"{where} returned {status} for {f.sop_class_uid.name} {f.sop_instance_uid}"
        return FileResult(f.path, f.sop_instance_uid, status, False), reason, status.category

    @staticmethod
    def _association_failure(
        assoc: Association, peer: Peer, watch: _AssociationWatch
    ) -> tuple[str, bool]:
        """Explain why no association was established; returns (reason, transient?)."""
        where = _describe_peer(peer)
        if watch.rejection is not None:
            detail = _describe_rejection(watch.rejection)
            if watch.rejection.result == RejectResult.REJECTED_TRANSIENT:
                return (f"{where} rejected the association for now (A-ASSOCIATE-RJ {detail})", True)
            return (
                f"{where} rejected the association (A-ASSOCIATE-RJ {detail}); check that it "
                f"knows our AE title {assoc.requestor.ae_title!r} and that its own AE title is "
                f"{peer.ae_title!r}",
                False,
            )
        rsp: A_ASSOCIATE | None = assoc.acceptor.primitive
        if rsp is not None and rsp.result == ASSOCIATION_ACCEPTED:
            proposed = sorted(
                {UID(cx.abstract_syntax or "").name for cx in assoc.requestor.requested_contexts}
            )
            return (
                f"{where} accepted none of the proposed presentation contexts "
                f"({', '.join(proposed)})",
                False,
            )
        if not watch.connected:
            if peer.tls:
                return (
                    f"cannot connect to {where}: connection refused, timed out, or the TLS "
                    "handshake failed (the peer's certificate must chain to "
                    "node.tls.ca_certificates and name the peer's host; see the log)",
                    True,
                )
            return (f"cannot connect to {where} (connection refused or timed out)", True)
        return (
            f"no A-ASSOCIATE response from {where} (timed out, or the peer aborted or closed "
            "the connection)",
            True,
        )

    def _retry_or_fail(
        self, reason: str, attempt: int, since: float, results: tuple[FileResult, ...]
    ) -> SendOutcome:
        sent = tuple(r.path for r in results if r.acknowledged)
        settings = self.settings
        if settings.max_attempts is not None and attempt >= settings.max_attempts:
            return self._failed(
                f"gave up after {attempt} attempt(s) (sender.max_attempts); last error: {reason}",
                results,
            )
        delay = backoff_delay(attempt, settings, self._rng)
        horizon_s = settings.give_up_after_hours * 3600.0
        if self._clock() + delay - since > horizon_s:
            return self._failed(
                f"gave up after {attempt} attempt(s) over "
                f"{(self._clock() - since) / 3600.0:.2f} h (sender.give_up_after_hours "
                f"{settings.give_up_after_hours:g}); last error: {reason}",
                results,
            )
        logger.warning("send attempt %d failed, retrying in %.1f s: %s", attempt, delay, reason)
        return SendOutcome(SendOutcomeKind.RETRY, reason, sent, self._clock() + delay, results)

    @staticmethod
    def _failed(reason: str, results: tuple[FileResult, ...]) -> SendOutcome:
        sent = tuple(r.path for r in results if r.acknowledged)
        return SendOutcome(SendOutcomeKind.FAILED, reason, sent, None, results)

    # -- one job ----------------------------------------------------------------------------

    def deliver(self, store: JobStore, job: Job, peer: Peer | None) -> SendOutcome:
        """Send a SENDING job's outbox and record the outcome on the job.

        SENT -> DONE (and the empty outbox folder is removed), RETRY -> rescheduled
        (``attempts`` + 1), FAILED -> FAILED with the reason. The send's duration is merged
        into the job's timings as ``"send"``.

        Parameters
        ----------
        store
            The queue holding ``job``.
        job
            A SENDING job, typically from :meth:`JobStore.due_for_sending`.
        peer
            Where its results go (the config's peer for ``job.calling_ae``); ``None`` when the
            calling AE is no longer configured, which fails the job with that reason.
        """
        if job.state is not JobState.SENDING or job.outbox_dir is None:
            raise ValueError(
                f"job {job.id} must be SENDING with an outbox folder to be delivered, "
                f"found {job.state.value} with outbox {job.outbox_dir}"
            )
        if peer is None:
            outcome = self._failed(
                f"no peer configured for calling AE {job.calling_ae!r}; nowhere to send results",
                (),
            )
        else:
            started = time.perf_counter()
            outcome = self.send(
                job.outbox_dir,
                peer,
                previous_attempts=job.attempts,
                sending_since=job.sending_since,
            )
            store.set_timings(job.id, {"send": time.perf_counter() - started})
        if outcome.kind is SendOutcomeKind.SENT:
            store.mark_done(job.id)
            remove_if_empty(job.outbox_dir)
        elif outcome.kind is SendOutcomeKind.RETRY and outcome.next_attempt_at is not None:
            store.schedule_retry(job.id, outcome.next_attempt_at, outcome.reason or "")
        else:
            store.mark_failed(job.id, outcome.reason or "send failed")
        return outcome
