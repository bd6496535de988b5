"""Association-level event handlers of the receiving side: the host check and the monitor.

:class:`PeerHostCheck` (``evt.EVT_REQUESTED``) ties a configured calling AE title to its
peer's host before the association is accepted; :class:`ReceiveMonitor` (accepted, rejected,
released, aborted) keeps per-association counts for one summary log line each and feeds the
Prometheus metrics. The C-STORE handler itself is in :mod:`dicom_node.handlers`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, cast

from dicom_node.audit import AuditEvent, AuditLog
from dicom_node.config import Peer
from dicom_node.metrics import NodeMetrics
from dicom_node.status import (
    PresentationProviderRejectReason,
    RejectResult,
    RejectSource,
    ServiceUserRejectReason,
    StoreStatus,
    reject_reason_name,
)

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event
    from pynetdicom.pdu_primitives import A_ASSOCIATE

logger = logging.getLogger(__name__)


@dataclass
class _AssociationCounts:
    calling_ae_title: str
    address: str
    port: int
    started: float
    stored: int = 0
    refused: int = 0
    bytes_stored: int = 0


class ReceiveMonitor:
    """Per-association counts for one INFO summary line each, plus the Prometheus metrics.

    Individual instances are logged at DEBUG only: at hundreds of slices per study an INFO line
    each would drown the log and cost time on the hot path.

    Parameters
    ----------
    metrics:
        Where to count; ``None`` keeps the log summaries only.
    clock:
        Monotonic seconds, for association durations.
    on_ended:
        Called with the peer's ``(address, port)`` and whether the association was released
        (``True``) or aborted, once per accepted association that stored instances: the series
        tracker's settle rule.
    audit:
        Where association_accepted / association_rejected are recorded; ``None``: nowhere
        (:func:`dicom_node.app.start` gives a monitor without one the SCP's audit trail).
    """

    def __init__(
        self,
        metrics: NodeMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_ended: Callable[[tuple[str, int], bool], None] | None = None,
        *,
        audit: AuditLog | None = None,
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._on_ended = on_ended
        self.audit = audit
        self._lock = threading.Lock()
        self._counts: dict[Association, _AssociationCounts] = {}

    def on_accepted(self, event: Event) -> None:
        """``evt.EVT_ACCEPTED``: start counting for this association."""
        requestor = event.assoc.requestor
        with self._lock:
            self._counts[event.assoc] = _AssociationCounts(
                requestor.ae_title, requestor.address, requestor.port, self._clock()
            )
        if self._metrics is not None:
            self._metrics.associations_accepted.inc()
        if self.audit is not None:
            self.audit.record(
                AuditEvent.ASSOCIATION_ACCEPTED,
                calling_ae=requestor.ae_title.strip(),
                called_ae=event.assoc.acceptor.ae_title.strip(),
                peer_address=f"{requestor.address}:{requestor.port}",
                status="accepted",
            )
        logger.debug(
            "accepted association from %s (%s:%d)",
            requestor.ae_title,
            requestor.address,
            requestor.port,
        )

    def on_rejected(self, event: Event) -> None:
        """``evt.EVT_REJECTED``: log who was refused and why (the A-ASSOCIATE-RJ we sent)."""
        requestor = event.assoc.requestor
        request = cast("A_ASSOCIATE", requestor.primitive)
        reject = cast("A_ASSOCIATE", event.assoc.acceptor.primitive)
        source = int(reject.result_source or 0)
        diagnostic = int(reject.diagnostic or 0)
        reason = reject_reason_name(source, diagnostic)
        try:
            result = RejectResult(reject.result or 0).name.lower()
        except ValueError:
            result = f"result{reject.result}"
        if self._metrics is not None:
            self._metrics.associations_rejected.labels(reason=reason).inc()
        if self.audit is not None:
            self.audit.record(
                AuditEvent.ASSOCIATION_REJECTED,
                calling_ae=str(request.calling_ae_title).strip(),
                called_ae=str(request.called_ae_title).strip(),
                peer_address=f"{requestor.address}:{requestor.port}",
                status=reason,
                reason=f"A-ASSOCIATE-RJ {result}, source {source}, reason {diagnostic}",
            )
        logger.warning(
            "rejected association from calling AE %r to called AE %r at %s:%d: %s, %s "
            "(result %s, source %d, reason %d)",
            request.calling_ae_title,
            request.called_ae_title,
            requestor.address,
            requestor.port,
            result,
            reason,
            reject.result,
            source,
            diagnostic,
        )

    def on_ended(self, event: Event) -> None:
        """``evt.EVT_RELEASED`` / ``evt.EVT_ABORTED``: one line summing up the association."""
        with self._lock:
            counts = self._counts.pop(event.assoc, None)
        if counts is None:  # already summed up (abort after release) or never accepted
            return
        how = "released" if event.event.name == "EVT_RELEASED" else "aborted"
        # Echo-only associations (monitoring pings) stay out of the INFO log.
        level = logging.INFO if counts.stored or counts.refused else logging.DEBUG
        logger.log(
            level,
            "association from %s (%s:%d) %s after %.2f s: %d instance(s) stored "
            "(%.1f MB), %d refused",
            counts.calling_ae_title,
            counts.address,
            counts.port,
            how,
            self._clock() - counts.started,
            counts.stored,
            counts.bytes_stored / 1e6,
            counts.refused,
        )
        if self._on_ended is not None and counts.stored:
            self._on_ended((counts.address, counts.port), how == "released")

    def instance_answered(
        self, assoc: Association, status: StoreStatus, n_bytes: int, duration_s: float
    ) -> None:
        """Count one answered C-STORE (called by :func:`handle_store`)."""
        with self._lock:
            counts = self._counts.get(assoc)
            if counts is not None:
                if status == StoreStatus.SUCCESS:
                    counts.stored += 1
                    counts.bytes_stored += n_bytes
                else:
                    counts.refused += 1
        if self._metrics is not None:
            self._metrics.instance_answered(status, n_bytes, duration_s)


#: Metrics label of associations refused because the calling AE title came from another host.
HOST_MISMATCH_REASON: Final[str] = "calling_ae_host_mismatch"

Resolver = Callable[[str], set[ipaddress.IPv4Address | ipaddress.IPv6Address]]


def _normalised_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address without IPv6 scope, IPv4-mapped IPv6 (``::ffff:a.b.c.d``) as IPv4."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def resolve_host(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address ``host`` (a name or an IP address) resolves to now.

    Raises
    ------
    OSError
        If the name cannot be resolved (``socket.gaierror``).
    """
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return {_normalised_address(str(info[4][0])) for info in infos}


class PeerHostCheck:
    """``evt.EVT_REQUESTED``: a configured calling AE title is accepted only from its ``host``.

    AE titles are not secrets; a peer's configured ``host`` is what ties the title to a
    machine. For a peer with ``check_host: true`` the connecting address must be one of the
    addresses its ``host`` resolves to (resolved at each association, so DNS changes apply);
    otherwise the association is rejected as pynetdicom rejects an unknown calling AE title
    (rejected-permanent, service-user, calling AE title not recognized; PS3.8 7.1.1.9), with a
    log line naming the title, the expected host and the actual address. Unknown titles are
    left to pynetdicom's own check. If the check itself fails unexpectedly it rejects: an
    error must not open the door.

    Parameters
    ----------
    peers:
        The configured peers.
    metrics:
        Counts rejections under :data:`HOST_MISMATCH_REASON`; ``None`` counts nothing.
    resolve:
        Host name -> addresses (:func:`resolve_host`; tests may pass a fixed table).
    audit:
        Where rejections are recorded (association_rejected); ``None``: nowhere.
    """

    def __init__(
        self,
        peers: Sequence[Peer],
        metrics: NodeMetrics | None = None,
        resolve: Resolver = resolve_host,
        audit: AuditLog | None = None,
    ) -> None:
        self._peers = {peer.ae_title: peer for peer in peers}
        self._metrics = metrics
        self._resolve = resolve
        self._audit = audit

    def on_requested(self, event: Event) -> None:
        """Reject the association now if its calling AE title came from the wrong host."""
        assoc = event.assoc
        try:
            problem = self._problem(assoc)
        except Exception:
            logger.exception("host check failed; rejecting the association to be safe")
            problem = "the host check failed (see the traceback above)"
        if problem is None:
            return
        reject_association(
            assoc,
            reason=HOST_MISMATCH_REASON,
            problem=problem,
            metrics=self._metrics,
            audit=self._audit,
            permanent=True,
        )

    def _problem(self, assoc: Association) -> str | None:
        """Why this association must be refused, or ``None`` if the host check passes."""
        request = cast("A_ASSOCIATE", assoc.requestor.primitive)
        calling = str(request.calling_ae_title).strip()
        peer = self._peers.get(calling)
        if peer is None or not peer.check_host:
            return None
        actual = assoc.requestor.address
        try:
            expected = self._resolve(peer.host)
        except OSError as exc:
            return (
                f"calling AE {calling!r} from {actual}: its configured host {peer.host!r} "
                f"cannot be resolved ({exc})"
            )
        if _normalised_address(actual) in expected:
            return None
        shown = ", ".join(sorted(str(a) for a in expected))
        return (
            f"calling AE {calling!r} connected from {actual}, but peers lists it at host "
            f"{peer.host!r} ({shown}); set check_host: false for that peer only if it may "
            "connect from anywhere"
        )


#: Metrics label and audit status of associations over a peer's own limit.
PEER_LIMIT_REASON: Final[str] = "peer_association_limit"


class PeerAssociationLimit:
    """``evt.EVT_REQUESTED``: at most ``peers[].max_associations`` at once per calling AE title.

    ``node.max_associations`` bounds the node; without a per-peer bound one busy (or hostile)
    peer can hold every slot and lock the others out. One more association than its limit is
    rejected the way pynetdicom rejects one over the global limit (rejected-transient,
    presentation service provider, local limit exceeded; PS3.8 7.1.1.9), so the peer retries
    later; with a log line, a metric and an audit line.

    Parameters
    ----------
    peers:
        The configured peers; those without ``max_associations`` are not limited here.
    metrics, audit:
        Where rejections are counted and recorded (``None``: nowhere).
    """

    def __init__(
        self,
        peers: Sequence[Peer],
        metrics: NodeMetrics | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._limits = {p.ae_title: p.max_associations for p in peers if p.max_associations}
        self._metrics = metrics
        self._audit = audit

    def on_requested(self, event: Event) -> None:
        """Reject the association if its peer already holds its limit."""
        assoc = event.assoc
        if assoc.is_rejected or assoc.is_aborted:
            return  # an earlier check already answered
        request = cast("A_ASSOCIATE", assoc.requestor.primitive)
        calling = str(request.calling_ae_title).strip()
        limit = self._limits.get(calling)
        if limit is None:
            return
        held = sum(
            1
            for other in assoc.ae.active_associations
            if other is not assoc
            and other.is_acceptor
            and not (other.is_rejected or other.is_aborted)
            and other.requestor.ae_title.strip() == calling
        )
        if held < limit:
            return
        where = f"{assoc.requestor.address}:{assoc.requestor.port}"
        problem = (
            f"calling AE {calling!r} at {where} already holds {held} association(s), its "
            f"peers[].max_associations {limit}"
        )
        reject_association(
            assoc,
            reason=PEER_LIMIT_REASON,
            problem=problem,
            metrics=self._metrics,
            audit=self._audit,
        )


def reject_association(
    assoc: Association,
    *,
    reason: str,
    problem: str,
    metrics: NodeMetrics | None,
    audit: AuditLog | None,
    permanent: bool = False,
) -> None:
    """Refuse an association from an ``evt.EVT_REQUESTED`` check: log, count under ``reason``,
    audit, answer A-ASSOCIATE-RJ and close.

    One path for every such check, so that each refusal is logged, counted and audited alike.
    ``permanent``: the calling AE title is not recognised from there (the host check; the peer
    must not retry); otherwise transient, local limit exceeded (a per-peer limit, low disk space):
    the peer retries later.
    """
    request = cast("A_ASSOCIATE", assoc.requestor.primitive)
    calling = str(request.calling_ae_title).strip()
    where = f"{assoc.requestor.address}:{assoc.requestor.port}"
    kind = (
        "permanent, calling AE not recognised" if permanent else "transient, local limit exceeded"
    )
    logger.warning(
        "rejected association from calling AE %r at %s (%s): %s", calling, where, kind, problem
    )
    if metrics is not None:
        metrics.associations_rejected.labels(reason=reason).inc()
    if audit is not None:
        audit.record(
            AuditEvent.ASSOCIATION_REJECTED,
            calling_ae=calling,
            called_ae=str(request.called_ae_title).strip(),
            peer_address=where,
            status=reason,
            reason=problem,
        )
    if permanent:
        assoc.acse.send_reject(
            RejectResult.REJECTED_PERMANENT,
            RejectSource.SERVICE_USER,
            ServiceUserRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED,
        )
    else:
        assoc.acse.send_reject(
            RejectResult.REJECTED_TRANSIENT,
            RejectSource.SERVICE_PROVIDER_PRESENTATION,
            PresentationProviderRejectReason.LOCAL_LIMIT_EXCEEDED,
        )
    assoc.kill()  # as pynetdicom does after its own rejections
