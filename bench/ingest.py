"""Ingest benchmark: the same files, sent by the same dcmtk storescu, to dcmtk storescp and to the node.

    .venv/bin/python bench/ingest.py [--rounds 10] [--files DIR] [--write-docs]

Both receivers run at the same time on 127.0.0.1; rounds alternate which one goes first. The
number is the wall time of one ``storescu`` process sending every file over one association
(process start, association, C-STORE of each file, release), ``TCP_NODELAY=1`` for all dcmtk
tools. The node is a real ``ichnet-node serve`` subprocess (engine torch, series quiet period
set long so no inference runs during the measurement). It fsyncs each file and renames it into
place before it answers (durability the node must keep); storescp writes without fsync.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REAL_HEAD_STUDY, markdown_table, plain_table, section_text, update_docs
from peers import NODE_AE, STORESCP_AE, echo, node_serve, require_dcmtk, storescp, storescu

#: Long enough that no series completes (and no inference runs) while the benchmark sends.
QUIET_PERIOD_S: Final[float] = 3600.0
TARGET_RATIO: Final[float] = 2.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=Path, default=REAL_HEAD_STUDY)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    require_dcmtk()
    files = sorted(args.files.glob("*.dcm"))
    if not files:
        raise SystemExit(f"no .dcm files in {args.files}")
    times: dict[str, list[float]] = {"storescp": [], "node": []}
    with tempfile.TemporaryDirectory(prefix="ichnet-ingest-") as tmp:
        work = Path(tmp)
        with (
            storescp(work / "storescp") as scp_port,
            node_serve(work, complete_after_s=QUIET_PERIOD_S) as node,
        ):
            targets = {"storescp": (scp_port, STORESCP_AE), "node": (node.port, NODE_AE)}
            for port, ae in targets.values():  # warm-up: first association, page cache
                storescu(port, ae, files)
                assert echo(port, ae)
            for round_index in range(args.rounds):
                order = list(targets) if round_index % 2 == 0 else list(reversed(targets))
                for name in order:
                    times[name].append(storescu(*targets[name], files))
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append(
            [
                name,
                len(files),
                f"{median * 1000:.0f}",
                f"{min(samples) * 1000:.0f}",
                f"{max(samples) * 1000:.0f}",
                f"{median * 1000 / len(files):.1f}",
            ]
        )
    ratio = statistics.median(times["node"]) / statistics.median(times["storescp"])
    headers = ["receiver", "files", "median ms", "min ms", "max ms", "ms per file"]
    print(plain_table(headers, rows))
    verdict = "meets" if ratio <= TARGET_RATIO else f"misses (by {ratio / TARGET_RATIO:.2f}x)"
    summary = (
        f"node / storescp (medians): **{ratio:.2f}x** ({verdict} the <= {TARGET_RATIO:.0f}x target)"
    )
    print(summary)
    if args.write_docs:
        notes = (
            f"{args.rounds} rounds, alternating order, after one warm-up send each; one storescu "
            f"process per send (files: {args.files.name}, {len(files)} instances). storescp writes "
            "without fsync; the node fsyncs + renames each file before answering."
        )
        body = markdown_table(headers, rows) + "\n\n" + summary
        update_docs(
            "ingest", section_text("Ingest: storescu -> storescp vs node", body, notes=notes)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
