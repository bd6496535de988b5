"""Machine-readable output: JSON log lines, and the audit trail as RFC 5424 syslog over UDP.

The syslog test is a real collector: a UDP socket on loopback receives what the running SCP
sends while real associations are accepted and rejected, and every message must be a valid
RFC 5424 message whose MSG is exactly the audit file's line.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.audit import read_audit
from dicom_node.config import parse_config
from tests.dicom_node.conftest import NODE_AE, PEER_AE, NodeFactory
from tests.dicom_node.dcmtk import echoscu

#: RFC 5424 section 6: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP
#: STRUCTURED-DATA [SP MSG]; our TIMESTAMP is UTC with milliseconds ("Z").
RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<host>[!-~]{1,255}) "
    r"(?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) - (?P<msg>.*)",
    re.DOTALL,
)
AUTHPRIV = 10
WARNING, INFORMATIONAL = 4, 6


@pytest.fixture
def collector() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    yield sock
    sock.close()


def _receive(sock: socket.socket, count: int) -> list[re.Match[str]]:
    messages = []
    for _ in range(count):
        data = sock.recv(65535)
        match = RFC5424.fullmatch(data.decode("utf-8"))
        assert match is not None, data
        messages.append(match)
    return messages


@pytest.mark.integration
def test_the_audit_trail_reaches_a_syslog_collector_as_rfc5424(
    start_node: NodeFactory, collector: socket.socket
) -> None:
    port = collector.getsockname()[1]
    node = start_node(
        config={"logging": {"audit_syslog": {"host": "127.0.0.1", "port": port}}},
    )
    assert echoscu(node.port, PEER_AE, NODE_AE).returncode == 0
    assert echoscu(node.port, "STRANGER", NODE_AE).returncode != 0
    messages = _receive(collector, 2)
    lines = read_audit(node.config.node.layout.audit_log)
    assert [m["msgid"] for m in messages] == ["association_accepted", "association_rejected"]
    assert [json.loads(m["msg"]) for m in messages] == lines
    accepted, rejected = messages
    assert int(accepted["pri"]) == AUTHPRIV * 8 + INFORMATIONAL
    assert int(rejected["pri"]) == AUTHPRIV * 8 + WARNING
    assert accepted["app"] == "ichnet-node"
    assert accepted["procid"] == str(os.getpid())
    assert accepted["host"] == socket.gethostname()
    assert lines[0]["time"].startswith(accepted["time"][:19])


def test_audit_syslog_keys_are_checked() -> None:
    config = parse_config({"logging": {"audit_syslog": {"host": "syslog.example.org"}}})
    assert config.logging.audit_syslog is not None
    assert (config.logging.audit_syslog.port, config.logging.audit_syslog.facility) == (
        514,
        "authpriv",
    )
    with pytest.raises(Exception, match="facility"):
        parse_config({"logging": {"audit_syslog": {"host": "h", "facility": "kern"}}})
    with pytest.raises(Exception, match="format"):
        parse_config({"logging": {"format": "xml"}})


def test_json_log_lines_parse_with_the_expected_fields(tmp_path: Path) -> None:
    """The CLI's own set-up, in a fresh interpreter, writing to a real stderr."""
    script = (
        "import logging\n"
        "from dicom_node.cli import setup_logging\n"
        "setup_logging('INFO')\n"
        "setup_logging('INFO', 'json')\n"  # serve: again once the config is read
        "log = logging.getLogger('dicom_node.service')\n"
        "log.info('job %d: done \"quoted\" ü', 7)\n"
        "try:\n"
        "    raise ValueError('bad\\nseries')\n"
        "except ValueError:\n"
        "    log.exception('job 8: analysis failed')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    lines = run.stderr.splitlines()
    assert len(lines) == 2, run.stderr
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"time", "level", "logger", "message", "thread"}
    assert first["level"] == "INFO" and first["logger"] == "dicom_node.service"
    assert first["message"] == 'job 7: done "quoted" ü'
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first["time"])
    assert second["level"] == "ERROR"
    assert (
        second["exception"].startswith("Traceback")
        and "ValueError: bad\nseries" in (second["exception"])
    )
