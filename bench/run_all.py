"""Run every benchmark and write its section of docs/benchmarks.md (``make bench``).

    .venv/bin/python bench/run_all.py [--quick]

``--quick`` keeps to short series at 256 input (minutes); without it the engine benchmark also
runs 512 input and 300-slice series, which takes tens of minutes on a 2-core CPU. The GPU check
is separate (bench/gpu_check.sh): it needs a GPU machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    engines = ["--sizes", "256", "--slices", "28"] if args.quick else []
    memory = ["--slices", "100"] if args.quick else []
    runs = [
        ["engines.py", *engines],
        ["ingest.py"],
        ["end_to_end.py"],
        ["settle_orthanc.py"],
        ["memory.py", *memory],
        ["selection.py"],
        ["load.py"],
    ]
    failed = []
    for script, *script_args in runs:
        print(f"== {script} {' '.join(script_args)}", flush=True)
        command = [sys.executable, str(BENCH_DIR / script), *script_args, "--write-docs"]
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
