"""Series completion with the settle rule, against the real ``ichnet-node serve``.

``series.complete_after_s`` is 30 s here (the default): a series that completes in seconds
did so by the settle rule (association released, one gap-free stack). A series that trickles
in over two associations 3 s apart must never end as an analysis silently missing half of it:
either one analysis has every slice, or a later one (a new job on the whole spooled series)
does, as the series' next ``result_version`` with new SEG/SR UIDs (a UID once sent is never
reused for other content).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pydicom
import pytest

from dicom_node.jobs import JobState
from tests.dicom_node.dcmtk import require_tool, storescu
from tests.integration.conftest import NODE_AE, PACS_AE, NodeFactory
from tests.integration.node_process import (
    NodeProcess,
    reserve_ports,
    running_storescp,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

QUIET_PERIOD_S: Final[float] = 30.0
#: Settle + one inference on a busy 2-core CPU + sending, with a wide margin (< the quiet period
#: plus inference, so a pass cannot come from the quiet period).
RESULTS_TIMEOUT_S: Final[float] = 25.0
TRICKLE_PAUSE_S: Final[float] = 3.0


@pytest.fixture
def node(node_factory: NodeFactory, tmp_path: Path) -> Iterator[NodeProcess]:
    require_tool("storescu")
    [port] = reserve_ports(1)
    with running_storescp(tmp_path / "peer", PACS_AE, port, caller_ae=NODE_AE):
        yield node_factory(
            peers=[{"ae_title": PACS_AE, "host": "127.0.0.1", "port": port}],
            complete_after_s=QUIET_PERIOD_S,
        ).start()


def _send(node: NodeProcess, files: list[Path]) -> None:
    run = storescu(node.port, files, PACS_AE, NODE_AE, "-v")
    assert run.returncode == 0, f"{run}\n{node.log()}"
    assert run.output.count("Received Store Response (Success)") == len(files), str(run)


def _result(node: NodeProcess, job_id: int) -> dict[str, object]:
    path = node.storage_dir / "results" / str(job_id) / "result.json"
    result: dict[str, object] = json.loads(path.read_text())
    return result


def _slices_in_result(node: NodeProcess, job_id: int) -> int:
    return len(_result(node, job_id)["slices"])  # type: ignore[arg-type]


def _kept_uids(node: NodeProcess, job_id: int) -> set[str]:
    """SOP Instance UIDs of the result objects kept for the job (as sent)."""
    kept = sorted((node.storage_dir / "results" / str(job_id)).glob("*.dcm"))
    assert len(kept) == 2, f"job {job_id}: SEG and SR kept, found {kept}"
    return {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in kept}


def test_released_complete_study_settles_without_the_quiet_period(
    node: NodeProcess, head_ct_dir: Path
) -> None:
    files = sorted(head_ct_dir.glob("*.dcm"))
    released = time.monotonic()
    _send(node, files)
    node.wait_for_log(r"job \d+ SENDING -> DONE", RESULTS_TIMEOUT_S)
    assert time.monotonic() - released < QUIET_PERIOD_S
    assert "gap-free stack, association released" in node.log()
    [job] = node.jobs()
    assert job["instance_count"] == len(files)
    assert _slices_in_result(node, job["id"]) == len(files)
    assert job["result_version"] == _result(node, job["id"])["result_version"] == 1


def test_series_over_two_associations_is_never_left_half_analysed(
    node: NodeProcess, head_ct_dir: Path
) -> None:
    """The first half (14 evenly spaced 4 mm slices) is itself a gap-free stack, so it may
    settle and be analysed; the second half must then give a further analysis of all 28."""
    files = sorted(head_ct_dir.glob("*.dcm"))
    _send(node, files[:14])
    time.sleep(TRICKLE_PAUSE_S)
    _send(node, files[14:])

    def every_job_done() -> list[dict[str, object]] | None:
        jobs = node.jobs()
        received = sum(int(job["instance_count"]) for job in jobs)  # type: ignore[call-overload]
        finished = all(job["state"] == JobState.DONE.value for job in jobs)
        return jobs if jobs and finished and received == len(files) else None

    jobs = wait_until(every_job_done, 2 * RESULTS_TIMEOUT_S, "every job of the series DONE")
    assert _slices_in_result(node, int(jobs[-1]["id"])) == len(files), (
        f"the last of {len(jobs)} analyses covers every slice"
    )
    # A re-analysis (the first half settled on its own) is the next version, never a reuse.
    versions = [int(job["result_version"]) for job in jobs]
    assert versions == list(range(1, len(jobs) + 1))
    assert [_result(node, int(job["id"]))["result_version"] for job in jobs] == versions
    uids = [_kept_uids(node, int(job["id"])) for job in jobs]
    assert len(set().union(*uids)) == 2 * len(jobs), "every analysis has new SEG/SR UIDs"
