"""End-to-end latency: the real head study sent by storescu to a running node, until SEG + SR arrive.

    .venv/bin/python bench/end_to_end.py [--runs 3] [--engine auto] [--quiet-s 5] [--write-docs]

A real ``ichnet-node serve`` subprocess receives the 28-slice head CT from dcmtk ``storescu``
(``TCP_NODELAY=1``) and sends its SEG and SR to a pynetdicom C-STORE SCP in this process that
records their arrival times. Measured: from the moment storescu has finished (every instance
acknowledged, association released) until both results are acknowledged by the receiver. The
split comes from the job's ``timings`` in the SQLite job table (volume, inference, SEG/SR/result
encoding, sending); "wait + other" is the rest: the completion quiet period
(``series.complete_after_s``), the assembler's polling, reading the spool and job bookkeeping.
The engine is built (and, for ``auto``, measured) before the first run, so it is not timed.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REAL_HEAD_STUDY, markdown_table, plain_table, section_text, update_docs
from peers import NODE_AE, node_serve, require_dcmtk, result_receiver, storescu

RESULT_TIMEOUT_S: Final[float] = 600.0
RESULTS_PER_SERIES: Final[int] = 2  # SEG + SR
STAGES: Final[tuple[str, ...]] = ("volume", "inference", "results", "send")


def job_timings(storage_dir: Path) -> list[dict[str, float]]:
    with sqlite3.connect(f"file:{storage_dir / 'jobs.sqlite3'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT id, state, timings FROM jobs ORDER BY id").fetchall()
    return [{"id": row[0], "state": row[1], **json.loads(row[2])} for row in rows]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=Path, default=REAL_HEAD_STUDY)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--quiet-s", type=float, default=5.0, help="series.complete_after_s")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    require_dcmtk()
    files = sorted(args.files.glob("*.dcm"))
    rows: list[list[str]] = []
    totals: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ichnet-e2e-") as tmp, result_receiver() as receiver:
        work = Path(tmp)
        with node_serve(
            work,
            result_port=receiver.port,
            engine=args.engine,
            complete_after_s=args.quiet_s,
            cache_dir=work / "engine-cache",
        ) as node:
            for run in range(args.runs):
                expected = len(receiver.arrivals) + RESULTS_PER_SERIES
                storescu(node.port, NODE_AE, files)
                sent_at = time.perf_counter()
                if not receiver.wait_for(expected, RESULT_TIMEOUT_S):
                    raise SystemExit(f"run {run}: results did not arrive; see {node.log_path}")
                total = receiver.arrivals[expected - 1][0] - sent_at
                time.sleep(0.5)  # the sender records its timing right after the peer's answer
                job = job_timings(node.storage_dir)[-1]
                staged = sum(job.get(stage, 0.0) for stage in STAGES)
                totals.append(total)
                rows.append(
                    [
                        str(run + 1),
                        f"{total:.2f}",
                        f"{total - staged:.2f}",
                        *(f"{job.get(stage, float('nan')):.2f}" for stage in STAGES),
                    ]
                )
                print(plain_table(HEADERS, rows), flush=True)
            log_lines = node.log_path.read_text().splitlines()
            chosen = [line for line in log_lines if "engine auto: using" in line]
            named = [line for line in log_lines if "engine: model" in line]
            engine_line = (chosen or named or [""])[0]
    headers = list(HEADERS)
    summary = (
        f"median end to end {statistics.median(totals):.2f} s for {len(files)} instances "
        f"(quiet period {args.quiet_s:g} s, engine {args.engine})"
    )
    print(summary)
    if args.write_docs:
        notes = (
            f"{args.runs} runs of the same study against one node process; `wait + other` = total "
            "minus the job's stage timings (dominated by the quiet period). Engine line from the "
            f"node log: `{engine_line.split(': ', 1)[-1][:300]}`"
        )
        body = markdown_table(headers, rows) + "\n\n" + summary
        update_docs(
            "end_to_end",
            section_text("End to end: storescu -> node -> SEG + SR", body, notes=notes),
        )
    return 0


HEADERS: Final[tuple[str, ...]] = (
    "run",
    "total s",
    "wait + other s",
    "volume s",
    "inference s",
    "SEG/SR encode s",
    "send s",
)

if __name__ == "__main__":
    raise SystemExit(main())
