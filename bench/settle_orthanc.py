"""Association release -> results stored in Orthanc, with ``series.complete_after_s: 30``.

    .venv/bin/python bench/settle_orthanc.py [--runs 5] [--engine auto] [--outputs seg,sr]
        [--notify] [--write-docs]

A real Orthanc (Debian package) holds the real 28-slice GE head CT and C-STOREs it to a real
``ichnet-node serve`` (``POST /modalities/ichnet/store``, synchronous: the call returns once
Orthanc released the association). The node runs with the default settle rule
(``settle_after_release_s: 1``) and a 30 s quiet period, and sends its results back to
Orthanc. Measured: from the return of the store call until Orthanc's study holds every result
series (polled over REST every 50 ms). The split comes from the job's ``timings`` (volume,
inference, results = SEG/SR/SC encoding, send); "wait + other" is the rest: the settle time,
the assembler's polling, reading the spool, job bookkeeping and the REST polling.
Before each run the result series of the previous run are deleted from Orthanc.
With ``--notify`` the node also posts a JSON and a FHIR notification (``send_on: all``) to an
``http.server`` endpoint in this process; "notify s" is release -> the later of the two.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    REAL_HEAD_STUDY,
    REPO_ROOT,
    markdown_table,
    plain_table,
    section_text,
    update_docs,
)
from end_to_end import job_timings
from peers import NODE_AE, free_port, node_serve

from tests.dicom_node.http_hook import hook_server
from tests.integration.orthanc import Orthanc, start_orthanc

ORTHANC_AE: Final[str] = "ORTHANC"
NODE_MODALITY: Final[str] = "ichnet"
QUIET_PERIOD_S: Final[float] = 30.0
RESULT_TIMEOUT_S: Final[float] = 120.0
POLL_S: Final[float] = 0.05
STAGES: Final[tuple[str, ...]] = ("volume", "inference", "results", "send")
MODALITY_OF_OUTPUT: Final[dict[str, str]] = {"seg": "SEG", "sr": "SR", "sc": "OT"}


def result_series(orthanc: Orthanc, study_id: str) -> dict[str, str]:
    """Orthanc IDs of the study's series that are not CT, by Modality."""
    return {
        series["MainDicomTags"].get("Modality", ""): series["ID"]
        for series in orthanc.series_of_study(study_id)
        if series["MainDicomTags"].get("Modality") != "CT"
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--outputs", default="seg,sr", help="peers[].outputs, comma-separated")
    parser.add_argument("--notify", action="store_true", help="JSON + FHIR notifications too")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()]
    expected = {MODALITY_OF_OUTPUT[o] for o in outputs}
    headers = ("run", "total s", "wait + other s", *(f"{s} s" for s in STAGES), "notify s")
    rows: list[list[str]] = []
    totals: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ichnet-settle-") as tmp, hook_server() as hook:
        work = Path(tmp)
        notifications = [
            {"url": hook.url, "send_on": "all", "format": fmt} for fmt in ("json", "fhir")
        ]
        orthanc_dicom_port, orthanc_http_port = free_port(), free_port()
        with node_serve(
            work,
            result_port=orthanc_dicom_port,
            engine=args.engine,
            complete_after_s=QUIET_PERIOD_S,
            cache_dir=work / "engine-cache",
            peer_ae=ORTHANC_AE,
            outputs=None if outputs == ["seg", "sr"] else outputs,
            notifications=notifications if args.notify else (),
        ) as node:
            (work / "orthanc").mkdir()
            orthanc = start_orthanc(
                work / "orthanc",
                ae_title=ORTHANC_AE,
                dicom_port=orthanc_dicom_port,
                http_port=orthanc_http_port,
                modalities={NODE_MODALITY: [NODE_AE, "127.0.0.1", node.port]},
            )
            try:
                study_id = ""
                for path in sorted(REAL_HEAD_STUDY.glob("*.dcm")):
                    study_id = orthanc.upload(path)["ParentStudy"]
                for run in range(args.runs):
                    for series_id in result_series(orthanc, study_id).values():
                        orthanc.request("DELETE", f"/series/{series_id}")
                    jobs_before = len(job_timings(node.storage_dir))
                    posts_before = len(hook.received)
                    orthanc.store_to_modality(NODE_MODALITY, [study_id])
                    released = time.perf_counter()
                    released_monotonic = time.monotonic()
                    deadline = released + RESULT_TIMEOUT_S
                    while not expected <= set(result_series(orthanc, study_id)):
                        if time.perf_counter() > deadline:
                            raise SystemExit(f"run {run}: no results; see {node.log_path}")
                        time.sleep(POLL_S)
                    total = time.perf_counter() - released
                    time.sleep(0.5)  # the sender records its timing right after the answer
                    jobs = job_timings(node.storage_dir)
                    if len(jobs) != jobs_before + 1:
                        raise SystemExit(
                            f"run {run}: expected one new job, got {jobs[jobs_before:]}"
                        )
                    job = jobs[-1]
                    staged = sum(job.get(stage, 0.0) for stage in STAGES)
                    notify = "-"
                    if args.notify:
                        posts = hook.wait_for(posts_before + 2, RESULT_TIMEOUT_S)[posts_before:]
                        notify = f"{max(p.at for p in posts) - released_monotonic:.2f}"
                    totals.append(total)
                    rows.append(
                        [
                            str(run + 1),
                            f"{total:.2f}",
                            f"{total - staged:.2f}",
                            *(f"{job.get(stage, float('nan')):.2f}" for stage in STAGES),
                            notify,
                        ]
                    )
                    print(plain_table(headers, rows), flush=True)
            finally:
                orthanc.stop()
            settled = node.log_path.read_text().count("gap-free stack, association released")
    summary = (
        f"median release -> {'+'.join(sorted(expected))} in Orthanc: "
        f"{statistics.median(totals):.2f} s over {len(totals)} runs "
        f"(complete_after_s {QUIET_PERIOD_S:g}, settle_after_release_s 1, engine {args.engine}; "
        f"{settled} of {len(totals)} series settled; repo {REPO_ROOT.name})"
    )
    print(summary)
    if args.write_docs:
        notes = (
            "Orthanc C-STOREs the real 28-slice study to `ichnet-node serve` "
            "(`POST /modalities/ichnet/store`); timed from the store call's return (association "
            "released) until Orthanc holds every result series. `wait + other` = total minus the "
            "job's stage timings: the settle time (1 s), the assembler's polling and bookkeeping."
        )
        body = markdown_table(headers, rows) + "\n\n" + summary
        update_docs(
            "settle_orthanc",
            section_text("Association release -> results in Orthanc", body, notes=notes),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
