"""``ichnet-node serve`` as a subprocess against dcmtk: who may associate, and bad input end to end.

tests/dicom_node/test_app.py checks every status and reason against the SCP alone; here the
whole node runs (job queue, assembler, worker), so every file that is stored also becomes a job
that the selection rules must turn down cleanly, and the process must still answer afterwards.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.jobs import TERMINAL_STATES, JobState
from dicom_node.status import StoreStatus
from tests.dicom_node.dcmtk import ToolRun, echoscu, require_tool, storescu, write_exact_profile
from tests.dicom_node.test_app import MALFORMED, STORED
from tests.integration.conftest import NODE_AE, PACS_AE, NodeFactory
from tests.integration.node_process import reserve_ports, wait_until

pytestmark = pytest.mark.integration

_DIMSE_STATUS: Final = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")
#: storescu's verdict on files it cannot read: it then sends nothing.
_STORESCU_CANNOT_SEND: Final = re.compile(
    r"No SOP Class or Instance UID in file|Bad DICOM file|premature end of stream"
)
#: The only file of ../shared/data/transfer_syntaxes storescu cannot address (VR UN UIDs).
_UNSENDABLE_TRANSFER_SYNTAX_FILE: Final = "explicit_VR-UN.dcm"
#: (implicit VR, little endian) of a file without File Meta -> its transfer syntax.
_SYNTAX_OF_ENCODING: Final = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}
#: Time for every job of the bad input to reach a terminal state (no inference runs).
JOBS_SETTLE_TIMEOUT_S: Final[float] = 60.0


@pytest.fixture
def serve(node_factory: NodeFactory) -> NodeFactory:
    """Skip unless dcmtk is installed; the node's results would go to an unused port."""
    require_tool("echoscu")
    require_tool("storescu")
    return node_factory


def _unused_peer() -> list[dict[str, object]]:
    [port] = reserve_ports(1)
    return [{"ae_title": PACS_AE, "host": "127.0.0.1", "port": port}]


def test_known_calling_ae_is_accepted_unknown_refused_and_sigterm_stops_cleanly(
    serve: NodeFactory,
) -> None:
    node = serve(peers=_unused_peer(), complete_after_s=1).start()

    accepted = echoscu(node.port, PACS_AE, NODE_AE, "-v")
    assert accepted.returncode == 0, f"{accepted}\n{node.log()}"
    assert "Received Echo Response (Success)" in accepted.output, accepted

    before = node.log_size()
    refused = echoscu(node.port, "INTRUDER", NODE_AE)
    assert refused.returncode != 0, refused
    assert "Result: Rejected Permanent, Source: Service User" in refused.output, refused
    assert "Reason: Calling AE Title Not Recognized" in refused.output, refused
    node.wait_for_log(r"rejected association from calling AE 'INTRUDER'", 10, since=before)

    wrong_called = echoscu(node.port, PACS_AE, "NOT_ICHNET")
    assert "Reason: Called AE Title Not Recognized" in wrong_called.output, wrong_called

    assert node.stop() == 0, node.log()
    assert "stopping node ICHNET" in node.log()
    assert echoscu(node.port, PACS_AE, NODE_AE).returncode != 0, "still answering after stop"


def _store_one(port: int, source: Path, work_dir: Path) -> ToolRun:
    """storescu offering only the file's own transfer syntax when the file names one, so
    compressed files are sent (and must be accepted) as they are, never converted."""
    options = ["-d"]
    ds = dcmread(source, stop_before_pixels=True, force=True)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:  # no File Meta in the file: what storescu will read it as
        syntax = _SYNTAX_OF_ENCODING.get(ds.original_encoding)
    if "SOPClassUID" in ds and syntax is not None:
        profile = work_dir / "exact.cfg"
        write_exact_profile(profile, [(str(ds.SOPClassUID), str(syntax))])
        options += ["-xf", str(profile), "Exact"]
    return storescu(port, [source], PACS_AE, NODE_AE, *options)


def _expected_status(folder: str, source: Path) -> StoreStatus | None:
    """What the node must answer; ``None`` when storescu cannot send the file at all."""
    if folder == "transfer_syntaxes":
        return None if source.name == _UNSENDABLE_TRANSFER_SYNTAX_FILE else StoreStatus.SUCCESS
    expected = MALFORMED[source.name]
    return None if expected.storescu_refuses is not None else expected.status


@pytest.mark.shared_data
def test_every_shared_file_is_answered_and_the_whole_node_survives(
    serve: NodeFactory, shared_data: Path, tmp_path: Path
) -> None:
    node = serve(peers=_unused_peer(), complete_after_s=0.5).start()
    sources = [
        (folder, path)
        for folder in ("transfer_syntaxes", "malformed")
        for path in sorted((shared_data / folder).glob("*/*.dcm"))
    ]
    assert len(sources) > 30, "the shared test files are missing"
    for folder, source in sources:
        run = _store_one(node.port, source, tmp_path)
        expected = _expected_status(folder, source)
        statuses = [int(code, 16) for code in _DIMSE_STATUS.findall(run.output)]
        if expected is None:
            assert _STORESCU_CANNOT_SEND.search(run.output), run
            assert statuses == [], run
            continue
        assert statuses == [expected], f"{source}\n{run}"
        if folder == "malformed" and MALFORMED[source.name] is not STORED:
            assert re.search(MALFORMED[source.name].reason, node.log()), (
                f"{source.name}: no logged reason matching {MALFORMED[source.name].reason!r}"
            )

    # Every stored series became a job; each must end in a terminal state with its reason.
    def settled() -> list[dict[str, object]] | None:
        jobs = node.jobs()
        open_jobs = [j for j in jobs if JobState(j["state"]) not in TERMINAL_STATES]
        return jobs if jobs and not open_jobs else None

    jobs = wait_until(settled, JOBS_SETTLE_TIMEOUT_S, "every job to reach a terminal state")
    not_skipped = [j for j in jobs if j["state"] != JobState.SKIPPED.value]
    assert not_skipped == [], "none of these files is an axial head CT series"
    assert all(j["reason"] for j in jobs), jobs
    skipped_lines = re.findall(r"job \d+ \w+ -> SKIPPED .*", node.log())
    assert len(skipped_lines) == len(jobs), node.log()

    assert node.process is not None and node.process.poll() is None, node.log()
    echo = echoscu(node.port, PACS_AE, NODE_AE)
    assert echo.returncode == 0, f"{echo}\n{node.log()}"
    assert "Traceback" not in node.log(), node.log()
