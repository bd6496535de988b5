"""Builds the pynetdicom Application Entity from :class:`NodeConfig` and starts the SCP.

Wiring only: what a handler does lives in :mod:`dicom_node.handlers`, where instances go in
:mod:`dicom_node.storage`. Association control uses pynetdicom's own negotiation checks, which
answer with the A-ASSOCIATE-RJ PS3.8 7.1.1.9 prescribes: rejected-permanent, service-user,
reason 3 (calling AE title not recognized) for a peer not in ``peers`` and reason 7 (called AE
title not recognized) for any called AE title other than ``node.ae_title``. Both comparisons
ignore leading and trailing spaces (PS3.8 9.3.2: they are not significant).
"""

from __future__ import annotations

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
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node.config import NodeConfig
from dicom_node.handlers import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    ReceiveMonitor,
    handle_echo,
    handle_store,
)
from dicom_node.storage import InstanceStore, StoredInstance

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
    # 0 = no limit (PS3.8 D.1): the peer sends PDUs as large as it likes, fewer per instance.
    ae.maximum_pdu_size = node.max_pdu
    ae.acse_timeout = node.acse_timeout_s
    ae.dimse_timeout = node.dimse_timeout_s
    ae.network_timeout = node.network_timeout_s
    ae.require_called_aet = True
    ae.require_calling_aet = [peer.ae_title for peer in config.peers]
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, list(ACCEPTED_TRANSFER_SYNTAXES))
    return ae


def event_handlers(
    store: InstanceStore,
    on_stored: Callable[[StoredInstance], None],
    monitor: ReceiveMonitor,
) -> list[evt.EventHandlerType]:
    """The handler bindings: C-ECHO, C-STORE with its dependencies, association bookkeeping."""
    return [
        (evt.EVT_C_ECHO, handle_echo, []),
        (evt.EVT_C_STORE, handle_store, [store, on_stored, monitor]),
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
) -> ThreadedAssociationServer:
    """Start the SCP on ``node.bind``:``node.port`` and return at once.

    Returns
    -------
    ThreadedAssociationServer
        ``shutdown()`` stops accepting; associations in progress finish on their own threads
        (``active_associations`` lists them).
    """
    ae = build_ae(config)
    return ae.start_server(
        (config.node.bind, config.node.port),
        block=False,
        evt_handlers=event_handlers(store, on_stored, monitor or ReceiveMonitor()),
    )
