"""Fault injection (issue 10, "must be shown" 3): 50 SIGKILLs of a node that receives a stream.

A PACS (dcmtk ``storescu``) keeps sending small synthetic studies to ``ichnet-node serve`` and
resends what was not acknowledged; results go to dcmtk ``storescp`` (``+uf``: every copy kept;
``--sleep-during 1``: a slow PACS, so sending lasts long enough to be interrupted). The node is
SIGKILLed at 50 seeded-random moments spread over receiving, acknowledged-but-not-queued,
inference and sending (see :mod:`tests.integration.fault_campaign`), restarted after each, and
then left to finish. Afterwards:

* **no acknowledged instance is lost**: each one is in the spool with its data set
  byte-identical to what storescu sent. The node stores the received data set as it came off
  the wire behind its own File Meta (its implementation UID, the sender's AE title), so
  "byte-identical" compares everything after the File Meta group; storescu sends the source
  file's data set unchanged (Explicit VR Little Endian both ways). An instance no longer in the
  spool would have to be referenced by a delivered SEG (analysed, then removed by retention);
* **no stuck job**: every job ends DONE, FAILED (with its reason) or SKIPPED, and each study's
  latest job is DONE or FAILED with a reason;
* **results exactly once per result version**: per study, every SOP Instance UID the peer
  received has one content (resending the same object is a no-op for a PACS and is counted; one
  UID with two contents is the stale-result bug); each DONE job delivered its own SEG + SR
  version (DONE jobs <= distinct SEG UIDs <= jobs), and the newest complete analysis covers
  every instance.

Slow: 50 restarts of a process that imports torch (2-10 s each on a busy 2-core VM) make it
about 8 minutes there.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from dicom_node.jobs import JobState
from dicom_node.layout import StorageLayout
from tests.dicom_node.dcmtk import require_tool
from tests.dicom_node.instances import dataset_bytes
from tests.integration.conftest import NODE_AE, PACS_AE, NodeFactory
from tests.integration.fault_campaign import PHASES, Campaign, Kill, Study
from tests.integration.node_process import StoreScp, reserve_ports, running_storescp

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS: Final[int] = 50
SEED: Final[int] = 20261204
#: Each of the four phases must have been hit at least this often to count as tested.
MIN_KILLS_PER_PHASE: Final[int] = 5
#: Quiet period: longer than a restart's gap before the PACS resends (the first instance of
#: the resend arrives within it, so the resent study is one job, not a partial one plus a late).
COMPLETE_AFTER_S: Final[float] = 2.0
#: storescp holds each C-STORE response this long (integer seconds): SEG + SR take >= 2 s.
PEER_SLEEP_S: Final[int] = 1
#: Studies whose results must have come through (the rest may FAIL after 3 interrupted runs,
#: by design): enough that sending under kills was exercised, not only giving up.
MIN_STUDIES_DONE: Final[int] = 3
#: After the last kill: resends, quiet periods and the queued inferences.
DRAIN_TIMEOUT_S: Final[float] = 600.0


@dataclass(frozen=True)
class Delivered:
    """One object storescp received (a resend is a second one)."""

    path: Path
    study_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    #: SEG only: the source instances it segments.
    references: frozenset[str]


def delivered_objects(peer: StoreScp) -> list[Delivered]:
    objects = []
    for path in sorted(p for p in peer.output_dir.iterdir() if p.is_file()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        references = frozenset(
            str(item.ReferencedSOPInstanceUID)
            for series in ds.get("ReferencedSeriesSequence", [])
            for item in series.ReferencedInstanceSequence
        )
        objects.append(
            Delivered(
                path,
                str(ds.StudyInstanceUID),
                str(ds.SOPClassUID),
                str(ds.SOPInstanceUID),
                references,
            )
        )
    return objects


@pytest.fixture
def slow_peer(tmp_path: Path) -> Any:
    """storescp as the PACS results go back to, answering each C-STORE after PEER_SLEEP_S."""
    require_tool("storescu")
    [port] = reserve_ports(1)
    with running_storescp(
        tmp_path / "peer", PACS_AE, port, NODE_AE, "--sleep-during", str(PEER_SLEEP_S)
    ) as scp:
        yield scp


def _check_acknowledged_instances(
    studies: list[Study], storage_dir: Path, seg_references: set[str]
) -> tuple[int, int, list[str]]:
    """(byte-identical in the spool, gone but analysed, problems)."""
    identical = analysed = 0
    problems: list[str] = []
    incoming = StorageLayout(storage_dir).incoming
    for study in studies:
        series_dir = incoming / study.study_instance_uid / study.series_instance_uid
        for uid in sorted(study.acknowledged):
            spooled = series_dir / f"{uid}.dcm"
            if spooled.is_file():
                if dataset_bytes(spooled) == dataset_bytes(study.sources[uid]):
                    identical += 1
                else:
                    problems.append(f"study {study.number}: {uid} differs from what was sent")
            elif uid in seg_references:
                analysed += 1
            else:
                problems.append(f"study {study.number}: acknowledged {uid} LOST")
    return identical, analysed, problems


def _check_results(
    studies: list[Study], jobs: list[dict[str, Any]], delivered: list[Delivered]
) -> tuple[Counter[str], list[str]]:
    """Per-study delivery rules; returns (counts for the summary, problems)."""
    counts: Counter[str] = Counter()
    problems: list[str] = []
    jobs_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for job in jobs:
        jobs_of[job["study_instance_uid"]].append(job)
    copies: dict[tuple[str, str], list[Delivered]] = defaultdict(list)
    for obj in delivered:
        copies[(obj.study_instance_uid, obj.sop_instance_uid)].append(obj)
    for study in studies:
        own = sorted(jobs_of[study.study_instance_uid], key=lambda j: j["id"])
        if not own:
            problems.append(f"study {study.number}: no job at all")
            continue
        latest = own[-1]
        counts[f"studies {latest['state']}"] += 1
        counts["reruns after an interrupted inference"] += sum(max(0, j["runs"] - 1) for j in own)
        if latest["state"] == JobState.FAILED.value:
            counts[f"FAILED: {latest['reason']}"] += 1
            if not latest["reason"]:
                problems.append(f"study {study.number}: job {latest['id']} FAILED without reason")
        elif latest["state"] != JobState.DONE.value:
            problems.append(
                f"study {study.number}: latest job {latest['id']} is {latest['state']}"
                f" ({latest['reason']})"
            )
        mine = {k: v for k, v in copies.items() if k[0] == study.study_instance_uid}
        for (_, uid), objs in mine.items():
            contents = {dataset_bytes(o.path) for o in objs}
            counts["identical re-deliveries"] += len(objs) - len(contents)
            if len(contents) > 1:
                problems.append(
                    f"study {study.number}: {len(contents)} different contents delivered under "
                    f"one SOP Instance UID {uid} (a PACS keeps the stale one)"
                )
        segs = {k[1]: v[0] for k, v in mine.items() if v[0].sop_class_uid == SegmentationStorage}
        srs = {k[1] for k, v in mine.items() if v[0].sop_class_uid == Comprehensive3DSRStorage}
        done = sum(1 for j in own if j["state"] == JobState.DONE.value)
        counts["result versions delivered"] += len(segs)
        if not done <= len(segs) <= len(own) or len(srs) != len(segs):
            problems.append(
                f"study {study.number}: {done} DONE job(s) of {len(own)} but {len(segs)} SEG "
                f"and {len(srs)} SR SOP Instance UID(s) delivered"
            )
        if latest["state"] == JobState.DONE.value and not any(
            seg.references == set(study.sources) for seg in segs.values()
        ):
            problems.append(f"study {study.number}: no delivered SEG covers all its instances")
    return counts, problems


def _summary(
    campaign: Campaign,
    peer: StoreScp,
    elapsed_s: float,
    spool: tuple[int, int, list[str]],
    results: Counter[str],
    problems: list[str],
) -> str:
    phases = campaign.phase_counts()
    targets = Counter(k.target for k in campaign.kills)
    sent = sum(len(s.sources) for s in campaign.studies)
    acknowledged = sum(len(s.acknowledged) for s in campaign.studies)
    lines = [
        f"fault injection: {len(campaign.kills)} SIGKILLs in {elapsed_s:.0f} s (seed {SEED})",
        "  kills per phase (a kill can fall in several): "
        + ", ".join(f"{p} {phases[p]} (aimed {targets[p]})" for p in PHASES)
        + f", queued {phases['queued']}",
        f"  studies {len(campaign.studies)}, instances sent {sent}, acknowledged "
        f"{acknowledged}, associations {sum(s.associations for s in campaign.studies)}",
        f"  acknowledged instances byte-identical in the spool {spool[0]}, "
        f"gone but analysed {spool[1]}, lost {len(spool[2])}",
        "  " + ", ".join(f"{k} {v}" for k, v in sorted(results.items())),
        f"  result C-STOREs that reached the peer {peer.log().count('storing DICOM file')}, "
        f"kept {sum(1 for p in peer.output_dir.iterdir() if p.is_file())} (storescp deletes an "
        "object whose response it could not send because the node had died; the node resends "
        "it)",
        f"  problems: {len(problems)}",
        *(f"    {p}" for p in problems),
    ]
    return "\n".join(lines)


@pytest.mark.timeout(1800)
def test_fifty_sigkills_lose_no_acknowledged_instance_and_deliver_each_result_once(
    node_factory: NodeFactory,
    slow_peer: StoreScp,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    node = node_factory(
        peers=[{"ae_title": PACS_AE, "host": "127.0.0.1", "port": slow_peer.port}],
        complete_after_s=COMPLETE_AFTER_S,
    ).start()
    campaign = Campaign(
        node,
        tmp_path / "campaign",
        random.Random(SEED),
        complete_after_s=COMPLETE_AFTER_S,
        inference_window_s=2.0,
        sending_window_s=1.5 * PEER_SLEEP_S,
    )
    started = time.monotonic()

    def progress(kill: Kill) -> None:
        with capsys.disabled():
            print(
                f"kill {kill.number:2d} aimed at {kill.target:9s} -> {kill.detail} "
                f"(back after {kill.restart_s:.1f} s)",
                flush=True,
            )

    campaign.run(KILLS, progress)
    campaign.drain(DRAIN_TIMEOUT_S)
    elapsed = time.monotonic() - started

    delivered = delivered_objects(slow_peer)
    seg_references = {
        uid
        for obj in delivered
        if obj.sop_class_uid == SegmentationStorage
        for uid in obj.references
    }
    spool = _check_acknowledged_instances(campaign.studies, node.storage_dir, seg_references)
    results, problems = _check_results(campaign.studies, node.jobs(), delivered)
    problems = spool[2] + problems
    unsent = [s.number for s in campaign.studies if not s.complete]
    if unsent:
        problems.append(f"studies never fully acknowledged: {unsent}")
    summary = _summary(campaign, slow_peer, elapsed, spool, results, problems)
    with capsys.disabled():
        print("\n" + summary, flush=True)

    assert not problems, summary
    phases = campaign.phase_counts()
    assert all(phases[p] >= MIN_KILLS_PER_PHASE for p in PHASES), summary
    assert results["studies DONE"] >= MIN_STUDIES_DONE, summary
