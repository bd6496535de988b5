"""DICOM TLS both ways, against dcmtk (echoscu/storescu/storescp with ``+tls``) on loopback.

The node's SCP runs with ``node.tls`` (certificates made by openssl at test time, see
certificates.py): a peer with a certificate from the configured CA gets in, plain TCP, a
certificate from another CA and (when required) no certificate at all do not, and a client that
connects and never starts its handshake does not hold up anybody else. Results go out over TLS to
a dcmtk storescp that requires our client certificate.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicom_node.audit import read_audit
from dicom_node.config import parse_config
from dicom_node.outbox import Outbox
from dicom_node.sender import ResultSender, SendOutcomeKind
from dicom_node.tls import TlsSetupError, client_context, server_context
from tests.dicom_node.certificates import Pki, make_pki
from tests.dicom_node.conftest import NODE_AE, PEER_AE, NodeFactory, RunningNode
from tests.dicom_node.dcmtk import echoscu, require_tool, run_tool, storescu
from tests.dicom_node.instances import ct_slice

pytestmark = pytest.mark.integration

_DIMSE_STATUS: Final = r"DIMSE Status\s*:\s*0x0000"
A_ABORT_INVALID_PARAMETER: Final[bytes] = bytes.fromhex("07000000000400000206")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_section(pki: Pki, **overrides: Any) -> dict[str, Any]:
    return {
        "certificate": str(pki.node.certificate),
        "private_key": str(pki.node.key),
        "ca_certificates": str(pki.ca),
        **overrides,
    }


@pytest.fixture
def tls_node(start_node: NodeFactory, pki: Pki) -> RunningNode:
    return start_node(config={"node": {"tls": _tls_section(pki)}})


def _tls_options(pair_key: Path, pair_cert: Path, ca: Path) -> tuple[str, ...]:
    # -pw: the keys are unencrypted; +cf: the CA that signs the node's certificate.
    return ("+tls", str(pair_key), str(pair_cert), "-pw", "+cf", str(ca))


def test_echo_and_store_over_tls_with_a_certificate_from_the_configured_ca(
    tls_node: RunningNode, pki: Pki, tmp_path: Path
) -> None:
    options = _tls_options(pki.peer.key, pki.peer.certificate, pki.ca)
    echo = echoscu(tls_node.port, PEER_AE, NODE_AE, *options)
    assert echo.returncode == 0, echo

    source = tmp_path / "slice.dcm"
    ct_slice().save_as(source, enforce_file_format=True)
    stored = storescu(tls_node.port, [source], PEER_AE, NODE_AE, *options, "-d")
    assert stored.returncode == 0, stored
    assert len(tls_node.stored) == 1
    assert dcmread(tls_node.stored[0].path).SOPInstanceUID == dcmread(source).SOPInstanceUID


def test_plain_tcp_to_a_tls_node_fails_and_is_logged(
    tls_node: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dicom_node.transport"):
        run = echoscu(tls_node.port, PEER_AE, NODE_AE)
        _wait_for(lambda: "TLS handshake with 127.0.0.1" in caplog.text)
    assert run.returncode != 0, run
    assert "the peer does not speak TLS" in caplog.text
    assert tls_node.metrics.registry.get_sample_value("ichnet_tls_handshake_failures_total") >= 1
    [audited] = read_audit(tls_node.config.node.layout.audit_log)
    assert (audited["event"], audited["status"]) == ("association_rejected", "tls_handshake_failed")
    assert "does not speak TLS" in str(audited["reason"])


def test_a_certificate_from_another_ca_is_refused(
    tls_node: RunningNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # The rogue client trusts the node's CA, so only the node's check can refuse it.
    with caplog.at_level(logging.WARNING, logger="dicom_node.transport"):
        run = echoscu(
            tls_node.port,
            PEER_AE,
            NODE_AE,
            *_tls_options(pki.rogue.key, pki.rogue.certificate, pki.ca),
        )
        _wait_for(lambda: "TLS handshake with 127.0.0.1" in caplog.text)
    assert run.returncode != 0, run
    assert "its certificate is not signed by node.tls.ca_certificates" in caplog.text


def test_a_client_certificate_is_required_unless_configured_otherwise(
    start_node: NodeFactory, pki: Pki
) -> None:
    anonymous = ("+tla", "+cf", str(pki.ca))  # TLS without a client certificate
    required = start_node(config={"node": {"tls": _tls_section(pki)}})
    assert echoscu(required.port, PEER_AE, NODE_AE, *anonymous).returncode != 0

    optional = start_node(
        config={
            "node": {
                "tls": _tls_section(pki, require_client_certificate=False),
                "port": _free_port(),
            }
        }
    )
    run = echoscu(optional.port, PEER_AE, NODE_AE, *anonymous)
    assert run.returncode == 0, run


def test_a_silent_client_does_not_block_the_accept_loop(tls_node: RunningNode, pki: Pki) -> None:
    # pynetdicom's own server would run this handshake on its accept thread and wait.
    with socket.create_connection(("127.0.0.1", tls_node.port)):
        started = time.monotonic()
        run = echoscu(
            tls_node.port,
            PEER_AE,
            NODE_AE,
            *_tls_options(pki.peer.key, pki.peer.certificate, pki.ca),
        )
        elapsed = time.monotonic() - started
    assert run.returncode == 0, run
    assert elapsed < 5, f"echo took {elapsed:.1f} s while another client stayed silent"


def test_the_pdu_limit_holds_inside_tls(tls_node: RunningNode, pki: Pki) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(pki.peer.certificate, pki.peer.key)
    with (
        socket.create_connection(("127.0.0.1", tls_node.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(struct.pack(">BBL", 0x01, 0, 512 * 1024 * 1024))
        answer = b""
        try:
            while chunk := tls.recv(64):
                answer += chunk
        except (ssl.SSLError, ConnectionResetError):
            pass
    assert answer == A_ABORT_INVALID_PARAMETER


def test_tls_files_spoiled_after_loading_are_a_clear_start_up_error(
    pki: Pki, tmp_path: Path
) -> None:
    # check-config refuses unusable files (test_config.py); files can still change before
    # the node starts, and then the start fails naming the keys.
    key = tmp_path / "node.key"
    ca = tmp_path / "ca.pem"
    key.write_bytes(pki.node.key.read_bytes())
    ca.write_bytes(pki.ca.read_bytes())
    config = parse_config(
        {"node": {"tls": _tls_section(pki, private_key=str(key), ca_certificates=str(ca))}}
    )
    assert config.node.tls is not None
    key.write_bytes(pki.peer.key.read_bytes())  # replaced by a key of another certificate
    with pytest.raises(TlsSetupError, match=r"node.tls.certificate / node.tls.private_key"):
        server_context(config.node.tls)
    key.write_bytes(pki.node.key.read_bytes())
    ca.write_text("not a certificate\n")
    with pytest.raises(TlsSetupError, match=r"node.tls.ca_certificates: cannot load"):
        client_context(config.node.tls)


# -- sending results over TLS ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tls_storescp(tmp_path: Path, pki: Pki) -> Iterator[tuple[int, Path]]:
    """dcmtk storescp with TLS that requires a client certificate from the test CA."""
    port = _free_port()
    received = tmp_path / "received"
    received.mkdir()
    log = (tmp_path / "storescp.log").open("wb")
    process = subprocess.Popen(
        [
            require_tool("storescp"),
            "-v",
            *_tls_options(pki.peer.key, pki.peer.certificate, pki.ca),
            "-aet",
            PEER_AE,
            "-od",
            str(received),
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port, received
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _outbox_with_one_result(tmp_path: Path) -> tuple[Outbox, Path]:
    outbox = Outbox(tmp_path / "outbox")
    outbox.prepare(1)
    ds = ct_slice()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    outbox.add(1, ds, "seg")
    return outbox, outbox.job_dir(1)


def _sender(pki: Pki, node_pair_cert: Path, node_pair_key: Path) -> ResultSender:
    config = parse_config(
        {
            "node": {
                "tls": _tls_section(
                    pki, certificate=str(node_pair_cert), private_key=str(node_pair_key)
                )
            },
            "peers": [{"ae_title": PEER_AE, "host": "127.0.0.1", "port": 1, "tls": True}],
            "sender": {"max_attempts": 3},
        }
    )
    assert config.node.tls is not None
    return ResultSender(config.sender, NODE_AE, tls_context=client_context(config.node.tls))


def _peer(port: int) -> Any:
    return (
        parse_config({"peers": [{"ae_title": PEER_AE, "host": "127.0.0.1", "port": port}]})
        .peers[0]
        .model_copy(update={"tls": True})
    )


def test_results_are_sent_over_tls_with_the_node_certificate(
    tls_storescp: tuple[int, Path], pki: Pki, tmp_path: Path
) -> None:
    port, received = tls_storescp
    _, job_dir = _outbox_with_one_result(tmp_path)
    sender = _sender(pki, pki.node.certificate, pki.node.key)
    outcome = sender.send(job_dir, _peer(port))
    assert outcome.kind is SendOutcomeKind.SENT, outcome.reason
    [stored] = list(received.iterdir())
    assert dcmread(stored).SOPClassUID == CTImageStorage


def test_a_peer_certificate_not_naming_its_host_stops_the_send(tmp_path: Path, pki: Pki) -> None:
    # storescp shows a certificate from the right CA but for another host name.
    port = _free_port()
    received = tmp_path / "received"
    received.mkdir()
    process = subprocess.Popen(
        [
            require_tool("storescp"),
            *_tls_options(pki.node_other_name.key, pki.node_other_name.certificate, pki.ca),
            "-aet",
            PEER_AE,
            "-od",
            str(received),
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        _, job_dir = _outbox_with_one_result(tmp_path)
        outcome = _sender(pki, pki.node.certificate, pki.node.key).send(job_dir, _peer(port))
    finally:
        process.terminate()
        process.wait(10)
    assert outcome.kind is SendOutcomeKind.RETRY
    assert (
        outcome.reason is not None
        and "(TLS): connection refused, timed out, or the TLS handshake failed" in outcome.reason
    )
    assert list(received.iterdir()) == []


def _wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.02)


def test_dcmtk_tls_is_available() -> None:
    run = run_tool("echoscu", "--version")
    assert "OpenSSL" in run.output, "this dcmtk build has no TLS"
