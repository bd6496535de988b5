"""Load: 8 concurrent senders x 5 studies into one node; every result delivered, memory and time.

    nice -n 5 .venv/bin/python bench/load.py [--senders 8] [--studies 5] [--rows 128]
        [--spacing-mm 5] [--engine auto] [--write-docs]

Each sender is its own modality/PACS (its own AE title, a configured peer of the node) running
dcmtk ``storescu`` for its studies one after another, one association per study; all senders
start together, so the node holds ``--senders`` associations at once while its single worker
analyses the series that completed. The studies are synthetic (``ichnet_core.synthetic``, one
series each, every other one with a hemorrhage). Results go back to dcmtk ``storescp``.

Printed: wall time from the first association to the last result acknowledged, per-study
latency (the study's last instance acknowledged -> its job DONE), the node's RSS once listening
and its peak (``VmHWM`` from /proc/<pid>/status, the whole life of the process), sampled peak
RSS during the load, and every refusal. A refusal is allowed only when it comes from a
configured limit (``node.max_associations``: A-ASSOCIATE-RJ "local limit exceeded"); such a
study is resent after a pause, as a PACS would. Any other refusal, a lost result or a job that
is not DONE makes the script exit non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, plain_table, section_text, update_docs
from peers import (
    DCMTK_ENV,
    LOCALHOST,
    NODE_AE,
    node_serve,
    peak_rss_mib,
    require_dcmtk,
    storescp,
)

from dicom_node.layout import StorageLayout

#: What storescu prints for a stored instance (with -v) and for a limit-refused association.
_STORE_SUCCESS: Final[str] = "Received Store Response (Success)"
_LIMIT_REFUSAL: Final[str] = "Local Limit Exceeded"
RESULT_TIMEOUT_S: Final[float] = 1800.0
#: Pause before a sender retries a study the node refused by its association limit.
RETRY_PAUSE_S: Final[float] = 2.0
RESULTS_PER_STUDY: Final[int] = 2  # SEG + SR
_SAMPLE_S: Final[float] = 0.2
#: The node's "listening" log line names the engine ``auto`` chose.
_ENGINE: Final = re.compile(r"listening on \S+ \(engine (\w+)")


@dataclass
class Study:
    sender: str
    study_instance_uid: str
    files: list[Path]
    acknowledged: int = 0
    #: time.time() when its last instance was acknowledged.
    sent_at: float = 0.0


@dataclass
class Tally:
    """What the senders saw; threads append under the lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    limit_refusals: int = 0
    other_refusals: list[str] = field(default_factory=list)


def make_studies(
    out_dir: Path, senders: list[str], per_sender: int, rows: int, spacing: float
) -> list[Study]:
    from pydicom import dcmwrite

    from ichnet_core.synthetic import SyntheticConfig, generate_case
    from ichnet_core.synthetic.dicom import to_datasets

    config = SyntheticConfig(rows=rows, columns=rows, slice_spacing_mm=(spacing, spacing))
    studies: list[Study] = []
    for s, sender in enumerate(senders):
        for k in range(per_sender):
            number = s * per_sender + k
            datasets = to_datasets(generate_case(5000 + number, config, hemorrhage=number % 2 == 0))
            directory = out_dir / f"{number:03d}"
            directory.mkdir(parents=True)
            files = []
            for index, dataset in enumerate(datasets):
                path = directory / f"CT{index:03d}.dcm"
                dcmwrite(path, dataset, enforce_file_format=True)
                files.append(path)
            studies.append(Study(sender, str(datasets[0].StudyInstanceUID), files))
    return studies


def send_study(study: Study, port: int, tally: Tally) -> None:
    """storescu until every instance is acknowledged; only limit refusals are retried."""
    while True:
        run = subprocess.run(
            ["storescu", "-v", "-nh", "-aet", study.sender, "-aec", NODE_AE, LOCALHOST, str(port)]
            + [str(f) for f in study.files],
            env=DCMTK_ENV,
            capture_output=True,
            text=True,
            check=False,
        )
        output = run.stdout + run.stderr
        acknowledged = output.count(_STORE_SUCCESS)
        if acknowledged == len(study.files):
            study.acknowledged = acknowledged
            study.sent_at = time.time()
            return
        with tally.lock:
            if _LIMIT_REFUSAL in output and acknowledged == 0:
                tally.limit_refusals += 1
            else:
                tally.other_refusals.append(
                    f"{study.sender}: {acknowledged}/{len(study.files)} acknowledged, exit "
                    f"{run.returncode}: {output[-600:]}"
                )
                return
        time.sleep(RETRY_PAUSE_S)


def read_jobs(storage_dir: Path) -> list[tuple[str, str, float]]:
    """(study UID, state, updated_at) of every job, read-only."""
    uri = f"{StorageLayout(storage_dir).jobs_db.as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        return list(conn.execute("SELECT study_instance_uid, state, updated_at FROM jobs"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def received_studies(out_dir: Path) -> list[str]:
    from pydicom import dcmread

    return [
        str(dcmread(p, stop_before_pixels=True).StudyInstanceUID)
        for p in out_dir.iterdir()
        if p.is_file()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--studies", type=int, default=5, help="studies per sender")
    parser.add_argument("--rows", type=int, default=128, help="matrix of the synthetic slices")
    parser.add_argument("--spacing-mm", type=float, default=5.0, help="slice spacing")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--quiet-s", type=float, default=2.0, help="series.complete_after_s")
    parser.add_argument("--cache-dir", type=Path, default=None, help="engine cache to reuse")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    require_dcmtk()
    senders = [f"MODALITY{i + 1}" for i in range(args.senders)]
    with tempfile.TemporaryDirectory(prefix="ichnet-load-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        studies = make_studies(work / "studies", senders, args.studies, args.rows, args.spacing_mm)
        slices = statistics.median(len(s.files) for s in studies)
        print(
            f"{len(studies)} synthetic studies of ~{slices:.0f} slices {args.rows}x{args.rows} "
            f"in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        tally = Tally()
        with (
            storescp(work / "received") as result_port,
            node_serve(
                work,
                result_port=result_port,
                engine=args.engine,
                complete_after_s=args.quiet_s,
                cache_dir=args.cache_dir or work / "engine-cache",
                peer_ae=senders[0],
                more_peer_aes=senders[1:],
            ) as node,
        ):
            pid = node.process.pid
            listening = rss_mib(pid)
            sampled_peak = listening
            began = time.time()
            threads = [
                threading.Thread(
                    target=lambda mine=[s for s in studies if s.sender == name]: [
                        send_study(s, node.port, tally) for s in mine
                    ],
                    name=name,
                )
                for name in senders
            ]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + RESULT_TIMEOUT_S
            expected = {s.study_instance_uid for s in studies}
            while time.monotonic() < deadline:
                sampled_peak = max(sampled_peak, rss_mib(pid))
                jobs = read_jobs(node.storage_dir) if not any(t.is_alive() for t in threads) else []
                if jobs and all(state in ("DONE", "FAILED", "SKIPPED") for _, state, _ in jobs):
                    break
                time.sleep(_SAMPLE_S)
            wall = time.time() - began
            peak = peak_rss_mib(pid)
            jobs = read_jobs(node.storage_dir)
            engine = _ENGINE.search(node.log_path.read_text(errors="replace"))
        delivered = received_studies(work / "received")
    done = {uid: at for uid, state, at in jobs if state == "DONE"}
    not_done = sorted({state for _, state, _ in jobs} - {"DONE"})
    per_study = [delivered.count(s.study_instance_uid) for s in studies]
    complete = sum(1 for n in per_study if n == RESULTS_PER_STUDY)
    latencies = sorted(
        done[s.study_instance_uid] - s.sent_at
        for s in studies
        if s.sent_at and s.study_instance_uid in done
    )
    headers = [
        "engine",
        "senders x studies",
        "slices",
        "results delivered",
        "wall s",
        "latency p50 / max s",
        "RSS listening MiB",
        "peak RSS MiB (VmHWM)",
        "peak RSS during load MiB",
        "limit refusals",
        "other refusals",
    ]
    row = [
        engine.group(1) if engine else args.engine,
        f"{args.senders} x {args.studies}",
        f"{slices:.0f} ({args.rows}x{args.rows})",
        f"{complete}/{len(studies)}",
        f"{wall:.0f}",
        f"{statistics.median(latencies):.0f} / {max(latencies):.0f}" if latencies else "-",
        f"{listening:.0f}",
        f"{peak:.0f}",
        f"{sampled_peak:.0f}",
        str(tally.limit_refusals),
        str(len(tally.other_refusals)),
    ]
    print(plain_table(headers, [row]), flush=True)
    for refusal in tally.other_refusals:
        print(f"refused: {refusal}")
    problems = []
    if complete != len(studies) or set(delivered) - expected:
        problems.append(f"results: {complete} of {len(studies)} studies got exactly SEG + SR")
    if not_done:
        problems.append(f"jobs not DONE: states {not_done}")
    if tally.other_refusals:
        problems.append(f"{len(tally.other_refusals)} refusal(s) not by a configured limit")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    if args.write_docs and not problems:
        notes = (
            "Each sender is its own AE title (a configured peer) running storescu for its studies "
            "one after another; all start together. Latency = the study's last instance "
            "acknowledged -> its job DONE (quiet period, queue wait behind the other studies, "
            "inference, SEG/SR, sending to storescp). node.max_associations 10 (default)."
        )
        update_docs(
            "load",
            section_text("Load: concurrent senders", markdown_table(headers, [row]), notes=notes),
        )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
