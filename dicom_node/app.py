"""Builds the pynetdicom Application Entity from :class:`NodeConfig` and starts the SCP.

Wiring only: what a handler does lives in :mod:`dicom_node.handlers`, where instances go in
:mod:`dicom_node.storage`. Association control uses pynetdicom's own negotiation checks, which
answer with the A-ASSOCIATE-RJ PS3.8 7.1.1.9 prescribes: rejected-permanent, service-user,
reason 3 (calling AE title not recognized) for a peer not in ``peers`` and reason 7 (called AE
title not recognized) for any called AE title other than ``node.ae_title``. Both comparisons
ignore leading and trailing spaces (PS3.8 9.3.2: they are not significant). On top of those:

* :class:`~dicom_node.associations.PeerHostCheck` rejects a known calling AE title that connects
  from an address other than its peer's ``host`` (``peers[].check_host``);
* ``node.max_associations`` is pynetdicom's association limit, made explicit: one more is
  rejected-transient, presentation provider, local limit exceeded;
* the server is :class:`~dicom_node.transport.GuardedAssociationServer`: ``limits`` enforced on
  the wire and, with ``node.tls``, DICOM TLS through pynetdicom's ``ssl_context`` with the
  handshake on each connection's own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.associations import PeerAssociationLimit, PeerHostCheck, ReceiveMonitor
from dicom_node.audit import AuditEvent, AuditLog
from dicom_node.config import NodeConfig, announced_max_pdu
from dicom_node.free_space import FreeSpaceGuard
from dicom_node.handlers import handle_echo, handle_store
from dicom_node.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_node.metrics import NodeMetrics
from dicom_node.storage import InstanceStore, StoredInstance
from dicom_node.tls import server_context
from dicom_node.transport import (
    GuardedAssociationServer,
    GuardedRequestHandler,
    TransportGuard,
    TransportRefusal,
)

#: Transfer syntaxes accepted for storage: whatever a PACS sends, stored as received (no
#: transcoding). The requestor's order decides which one a presentation context gets.
ACCEPTED_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,  # retired, still sent by older modalities
    JPEGBaseline8Bit,  # lossy
    JPEGExtended12Bit,  # lossy
    JPEGLossless,  # Process 14
    JPEGLosslessSV1,  # Process 14, selection value 1
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,  # lossless or lossy
    RLELossless,
)


class NoPeersConfiguredError(ValueError):
    """``peers`` is empty: the node would have nobody to accept associations from."""


def build_ae(config: NodeConfig) -> AE:
    """An AE with our identity, limits, timeouts, contexts and association checks.

    Raises
    ------
    NoPeersConfiguredError
        If ``config.peers`` is empty: pynetdicom reads an empty calling-AE list as "accept
        anyone", the opposite of what an empty ``peers`` means here.
    """
    if not config.peers:
        raise NoPeersConfiguredError(
            "peers: no peer is configured, so no calling AE title may send to this node; "
            "list the PACS that sends images under 'peers'"
        )
    node = config.node
    ae = AE(ae_title=node.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    # Announce what limits.max_pdu_bytes lets through: a peer that honours it is never aborted.
    ae.maximum_pdu_size = announced_max_pdu(config)
    ae.maximum_associations = node.max_associations
    ae.acse_timeout = node.acse_timeout_s
    ae.dimse_timeout = node.dimse_timeout_s
    ae.network_timeout = node.network_timeout_s
    ae.require_called_aet = True
    ae.require_calling_aet = [peer.ae_title for peer in config.peers]
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:  # set in every one of pynetdicom's contexts
            ae.add_supported_context(context.abstract_syntax, list(ACCEPTED_TRANSFER_SYNTAXES))
    return ae


def event_handlers(
    config: NodeConfig,
    store: InstanceStore,
    on_stored: Callable[[StoredInstance], None],
    monitor: ReceiveMonitor,
    metrics: NodeMetrics | None = None,
    audit: AuditLog | None = None,
) -> list[evt.EventHandlerType]:
    """The handler bindings: host check, free-space watermark, C-ECHO, C-STORE with its
    dependencies, association bookkeeping."""
    host_check = PeerHostCheck(config.peers, metrics, audit=audit)
    space = FreeSpaceGuard(
        config.node.storage_dir, config.storage.min_free_bytes, metrics=metrics, audit=audit
    )
    peer_limit = PeerAssociationLimit(config.peers, metrics, audit)
    return [
        (evt.EVT_REQUESTED, host_check.on_requested, []),
        (evt.EVT_REQUESTED, peer_limit.on_requested, []),
        (evt.EVT_REQUESTED, space.on_requested, []),
        (evt.EVT_C_ECHO, handle_echo, []),
        (
            evt.EVT_C_STORE,
            handle_store,
            [store, on_stored, monitor, config.limits, space, audit],
        ),
        (evt.EVT_ACCEPTED, monitor.on_accepted, []),
        (evt.EVT_REJECTED, monitor.on_rejected, []),
        (evt.EVT_RELEASED, monitor.on_ended, []),
        (evt.EVT_ABORTED, monitor.on_ended, []),
    ]


def start(
    config: NodeConfig,
    store: InstanceStore,
    on_stored: Callable[[StoredInstance], None],
    monitor: ReceiveMonitor | None = None,
    metrics: NodeMetrics | None = None,
    *,
    audit: AuditLog | None = None,
) -> GuardedAssociationServer:
    """Start the SCP on ``node.bind``:``node.port`` and return at once.

    Parameters
    ----------
    metrics:
        Where transport refusals, TLS failures and host-check rejections are counted (the
        ``monitor``'s metrics, normally); ``None`` counts nothing.
    audit:
        The audit trail every refusal, rejection and stored instance is recorded in; ``None``
        opens the one under ``node.storage_dir`` (there is no way to run the SCP unaudited).

    Returns
    -------
    GuardedAssociationServer
        ``shutdown()`` stops accepting; associations in progress finish on their own threads
        (``active_associations`` lists them); ``is_serving`` tells whether it still accepts.

    Raises
    ------
    NoPeersConfiguredError
        See :func:`build_ae`.
    dicom_node.tls.TlsSetupError
        If ``node.tls`` names files that cannot be loaded.
    """
    ae = build_ae(config)
    node = config.node
    ssl_context = server_context(node.tls) if node.tls is not None else None
    audit = audit or AuditLog.for_storage_dir(node.storage_dir, config.logging.audit_syslog)
    monitor = monitor or ReceiveMonitor(metrics)
    if monitor.audit is None:
        monitor.audit = audit  # every association is audited, whoever built the monitor

    def refused(reason: TransportRefusal, peer: str, calling_ae: str, detail: str) -> None:
        if metrics is not None:
            metrics.transport_refusals.labels(reason=reason.value).inc()
        audit.record(
            AuditEvent.ASSOCIATION_REJECTED,
            calling_ae=calling_ae or None,
            called_ae=node.ae_title,
            peer_address=peer,
            status=reason.value,
            reason=f"A-ABORT at the transport: {detail}",
        )

    def tls_failed(peer: str, detail: str) -> None:
        if metrics is not None:
            metrics.tls_handshake_failures.inc()
        audit.record(
            AuditEvent.ASSOCIATION_REJECTED,
            called_ae=node.ae_title,
            peer_address=peer,
            status="tls_handshake_failed",
            reason=detail,
        )

    guard = TransportGuard(
        config.limits,
        handshake_timeout_s=node.acse_timeout_s,
        read_timeout_s=node.network_timeout_s or None,
        on_refused=refused,
        on_tls_failure=tls_failed,
    )
    server = ae.make_server(
        (node.bind, node.port),
        ssl_context=ssl_context,
        evt_handlers=event_handlers(
            config,
            store,
            on_stored,
            monitor,
            metrics,
            audit,
        ),
        server_class=GuardedAssociationServer,
        request_handler=GuardedRequestHandler,
        guard=guard,
    )
    assert isinstance(server, GuardedAssociationServer)
    # As AE.start_server does: AE.shutdown() and server.shutdown() look the server up there.
    ae._servers.append(server)
    thread = threading.Thread(
        target=server.serve_forever, name=f"ichnet-scp-{node.port}", daemon=True
    )
    server.serve_thread = thread
    thread.start()
    return server
