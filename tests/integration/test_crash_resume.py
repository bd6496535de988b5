"""SIGKILL the node at the worst moments; after a restart nothing acknowledged is lost.

A C-STORE success tells the PACS it may forget the instance, so the node owes it the results
even if it dies right after. Two moments are tested with the real ``ichnet-node serve``, dcmtk
``storescu`` as the modality/PACS and dcmtk ``storescp`` as the peer that receives the results:

* right after the last instance was acknowledged, before the series counted as complete;
* while the job is RUNNING (inference under way).

Results are SEG + SR with new UIDs per analysis, kept by the node under ``results/<job>/`` as
sent, so "arrived exactly once" is checked against those: storescp keeps every received copy,
and a rerun that sent a second pair would show four objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from dicom_node.jobs import JobState
from dicom_node.layout import StorageLayout
from tests.dicom_node.dcmtk import require_tool, storescu
from tests.integration.conftest import NODE_AE, PACS_AE, NodeFactory
from tests.integration.node_process import (
    NodeProcess,
    StoreScp,
    reserve_ports,
    running_storescp,
)

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

#: Long enough that a SIGKILL sent right after storescu returns lands before completion.
SLOW_COMPLETION_S: Final[float] = 3.0
FAST_COMPLETION_S: Final[float] = 1.0
#: Quiet period + one inference on a busy 2-core CPU + sending, with a wide margin.
RESULTS_TIMEOUT_S: Final[float] = 180.0
_DONE = r"job \d+ SENDING -> DONE"


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[StoreScp]:
    """storescp as the PACS's receiving side (AE ``PACS``), where results go back to."""
    require_tool("storescu")
    [port] = reserve_ports(1)
    with running_storescp(tmp_path / "peer", PACS_AE, port, caller_ae=NODE_AE) as scp:
        yield scp


def _node(node_factory: NodeFactory, peer: StoreScp, complete_after_s: float) -> NodeProcess:
    return node_factory(
        peers=[{"ae_title": PACS_AE, "host": "127.0.0.1", "port": peer.port}],
        complete_after_s=complete_after_s,
    )


def _send_study(node: NodeProcess, sources: list[Path]) -> None:
    run = storescu(node.port, sources, PACS_AE, NODE_AE, "-v")
    acknowledged = run.output.count("Received Store Response (Success)")
    assert run.returncode == 0 and acknowledged == len(sources), f"{run}\n{node.log()}"


def _kept_result_uids(node: NodeProcess) -> dict[str, str]:
    """SOP Class -> SOP Instance UID of the result objects the node kept for its one job."""
    [job] = node.jobs()
    kept = sorted(StorageLayout(node.storage_dir).result_dir(job["id"]).glob("*.dcm"))
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in kept]
    return {str(ds.SOPClassUID): ds.SOPInstanceUID for ds in datasets}


def _assert_results_arrived_once(peer: StoreScp, node: NodeProcess, sources: set[str]) -> None:
    received = peer.received()
    by_class = sorted((str(ds.SOPClassUID), ds.SOPInstanceUID) for ds in received)
    assert len(received) == 2, f"expected one SEG and one SR, got {by_class}\n{peer.log()}"
    seg = next(ds for ds in received if ds.SOPClassUID == SegmentationStorage)
    sr = next(ds for ds in received if ds.SOPClassUID == Comprehensive3DSRStorage)
    # What arrived is what the node kept as sent (the UIDs are new per analysis, so a rerun
    # after the kill must not have sent the first run's objects as well: len == 2 above).
    assert _kept_result_uids(node) == {
        SegmentationStorage: seg.SOPInstanceUID,
        Comprehensive3DSRStorage: sr.SOPInstanceUID,
    }
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == sources, "the SEG covers every acknowledged instance"


def _source_uids(sources: list[Path]) -> dict[str, pydicom.Dataset]:
    return {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in sources)}


def test_sigkill_after_the_last_acknowledgement_loses_nothing(
    node_factory: NodeFactory, peer: StoreScp, head_ct_dir: Path
) -> None:
    node = _node(node_factory, peer, SLOW_COMPLETION_S).start()
    sources = sorted(head_ct_dir.glob("*.dcm"))
    originals = _source_uids(sources)

    _send_study(node, sources)
    node.kill()
    assert "-> QUEUED" not in node.log(), "the kill was meant to land before completion"

    # Every acknowledged instance is on disk, intact, where the spool keeps it.
    [study_uid] = {ds.StudyInstanceUID for ds in originals.values()}
    [series_uid] = {ds.SeriesInstanceUID for ds in originals.values()}
    spooled = sorted(
        (StorageLayout(node.storage_dir).incoming / study_uid / series_uid).glob("*.dcm")
    )
    assert {p.stem for p in spooled} == set(originals)
    for path in spooled:
        stored = pydicom.dcmread(path)
        assert stored.PixelData == originals[path.stem].PixelData, path.name
    [job] = node.jobs()
    assert (job["state"], job["instance_count"]) == (JobState.RECEIVED.value, len(sources))
    assert peer.received() == []

    node.start()  # same config, same storage_dir
    node.wait_for_log(_DONE, RESULTS_TIMEOUT_S)
    _assert_results_arrived_once(peer, node, set(originals))
    [job] = node.jobs()
    assert (job["state"], job["runs"]) == (JobState.DONE.value, 1)


def test_sigkill_while_running_reruns_the_job_and_sends_once(
    node_factory: NodeFactory, peer: StoreScp, head_ct_dir: Path
) -> None:
    node = _node(node_factory, peer, FAST_COMPLETION_S).start()
    sources = sorted(head_ct_dir.glob("*.dcm"))

    _send_study(node, sources)
    node.wait_for_log(r"job \d+ QUEUED -> RUNNING", RESULTS_TIMEOUT_S)
    node.kill()
    assert "-> SENDING" not in node.log(), "the kill was meant to land during inference"
    [job] = node.jobs()
    assert (job["state"], job["runs"]) == (JobState.RUNNING.value, 1)

    restarted_at = node.log_size()
    node.start()
    node.wait_for_log(r"recovered: 1 rerun", 10, since=restarted_at)
    node.wait_for_log(_DONE, RESULTS_TIMEOUT_S, since=restarted_at)
    _assert_results_arrived_once(peer, node, set(_source_uids(sources)))
    [job] = node.jobs()
    assert (job["state"], job["runs"]) == (JobState.DONE.value, 2)
