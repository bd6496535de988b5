"""Who may associate: the peer's host behind its AE title, and how many at once.

Real associations over loopback. Linux routes all of 127.0.0.0/8 to the loopback interface, so a
client bound to 127.0.0.2 is a second machine as far as the node can tell.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.audit import read_audit
from dicom_node.status import (
    PresentationProviderRejectReason,
    RejectResult,
    RejectSource,
    ServiceUserRejectReason,
    StoreStatus,
)
from tests.dicom_node.conftest import NODE_AE, PEER_AE, NodeFactory, RunningNode
from tests.dicom_node.dcmtk import echoscu

pytestmark = pytest.mark.integration


def _peer(host: str, **extra: Any) -> dict[str, Any]:
    return {"peers": [{"ae_title": PEER_AE, "host": host, "port": 4242, **extra}]}


def _associate(node: RunningNode, source: str = "127.0.0.1") -> Association:
    ae = AE(ae_title=PEER_AE)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", node.port, ae_title=NODE_AE, bind_address=(source, 0))


def _rejection(assoc: Association) -> tuple[int, int, int]:
    rj = assoc.acceptor.primitive
    assert assoc.is_rejected and rj is not None
    return (int(rj.result), int(rj.result_source), int(rj.diagnostic))


CALLING_AE_NOT_RECOGNIZED = (
    RejectResult.REJECTED_PERMANENT,
    RejectSource.SERVICE_USER,
    ServiceUserRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED,
)


def _host_mismatches(node: RunningNode) -> float:
    value = node.metrics.registry.get_sample_value(
        "ichnet_associations_rejected_total", {"reason": "calling_ae_host_mismatch"}
    )
    return value or 0.0


def test_a_known_ae_title_from_another_host_is_rejected_and_logged(
    start_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    node = start_node(config=_peer("127.0.0.2"))
    with caplog.at_level(logging.WARNING, logger="dicom_node.associations"):
        run = echoscu(node.port, PEER_AE, NODE_AE)  # from 127.0.0.1
    assert run.returncode != 0, run
    assert "Reason: Calling AE Title Not Recognized" in run.output, run
    assert (
        "calling AE 'PACS' connected from 127.0.0.1, but peers lists it at host '127.0.0.2' "
        "(127.0.0.2)" in caplog.text
    )
    assert _host_mismatches(node) == 1
    assert node.stored == []


def test_the_same_title_from_its_configured_host_is_accepted(start_node: NodeFactory) -> None:
    node = start_node(config=_peer("127.0.0.2"))
    assoc = _associate(node, source="127.0.0.2")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == StoreStatus.SUCCESS
    assoc.release()
    assert _rejection(_associate(node, source="127.0.0.3")) == CALLING_AE_NOT_RECOGNIZED


def test_host_names_are_resolved(start_node: NodeFactory) -> None:
    node = start_node(config=_peer("localhost"))
    assoc = _associate(node)
    assert assoc.is_established
    assoc.release()


def test_an_unresolvable_host_rejects_and_says_so(
    start_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    node = start_node(config=_peer("no-such-host.invalid"))
    with caplog.at_level(logging.WARNING, logger="dicom_node.associations"):
        assoc = _associate(node)
    assert _rejection(assoc) == CALLING_AE_NOT_RECOGNIZED
    assert "its configured host 'no-such-host.invalid' cannot be resolved" in caplog.text


def test_check_host_false_accepts_the_title_from_anywhere(start_node: NodeFactory) -> None:
    node = start_node(config=_peer("127.0.0.2", check_host=False))
    assoc = _associate(node)
    assert assoc.is_established
    assoc.release()
    assert _host_mismatches(node) == 0


def test_max_associations_is_enforced_and_frees_up(start_node: NodeFactory) -> None:
    node = start_node(config={"node": {"max_associations": 2}})
    held = [_associate(node), _associate(node)]
    assert all(a.is_established for a in held)
    third = _associate(node)
    assert _rejection(third) == (
        RejectResult.REJECTED_TRANSIENT,
        RejectSource.SERVICE_PROVIDER_PRESENTATION,
        PresentationProviderRejectReason.LOCAL_LIMIT_EXCEEDED,
    )
    held[0].release()
    again = _associate(node)
    assert again.is_established
    again.release()
    held[1].release()
    assert node.server.ae.maximum_associations == 2
    events = [(r["event"], r["status"]) for r in read_audit(node.config.node.layout.audit_log)]
    assert events.count(("association_accepted", "accepted")) == 3
    assert events.count(("association_rejected", "local_limit_exceeded")) == 1


def test_one_peer_cannot_take_every_slot(start_node: NodeFactory) -> None:
    node = start_node(
        config={
            "node": {"max_associations": 4},
            "peers": [
                {"ae_title": PEER_AE, "host": "127.0.0.1", "port": 4242, "max_associations": 2},
                {"ae_title": "OTHER", "host": "127.0.0.1", "port": 4243},
            ],
        }
    )

    def associate(calling: str) -> Association:
        ae = AE(ae_title=calling)
        ae.add_requested_context(Verification)
        return ae.associate("127.0.0.1", node.port, ae_title=NODE_AE)

    held = [associate(PEER_AE), associate(PEER_AE)]
    assert all(a.is_established for a in held)
    over = associate(PEER_AE)
    assert _rejection(over) == (
        RejectResult.REJECTED_TRANSIENT,
        RejectSource.SERVICE_PROVIDER_PRESENTATION,
        PresentationProviderRejectReason.LOCAL_LIMIT_EXCEEDED,
    )
    other = associate("OTHER")  # the other peer still gets in
    assert other.is_established
    other.release()
    held[0].release()
    again = associate(PEER_AE)  # a slot of its own freed up
    assert again.is_established
    again.release()
    held[1].release()
    [rejected] = [
        r
        for r in read_audit(node.config.node.layout.audit_log)
        if r["event"] == "association_rejected"
    ]
    assert rejected["status"] == "peer_association_limit"
    assert "peers[].max_associations 2" in str(rejected["reason"])
    assert (
        node.metrics.registry.get_sample_value(
            "ichnet_associations_rejected_total", {"reason": "peer_association_limit"}
        )
        == 1
    )
