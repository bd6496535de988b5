"""`ichnet-node infer` on the real 28-slice head CT: wall time and the pipeline's own split.

    .venv/bin/python bench/infer_real.py [--weights FILE | --train-config YAML] [--engine auto]
                                          [--runs 5]

Each run is the real command in a fresh process (``ichnet-node infer <study> --out ...``), as an
admin or a script calls it. Reported per run: the process wall time (imports, engine start-up
from the cached export, analysis, writing SEG/SR/result.json) and the ``timings_s`` the command
writes into result.json (volume, inference, results). The engine cache (ONNX export, ``auto``
decision) is filled by one untimed run first, as on a node that has started once.

``--train-config`` benchmarks an architecture before trained weights exist: random weights with
the config's ``model.overrides`` (e.g. training/configs/cpu_diag.yaml: 256 px at 1.0 mm), spread
like a trained model's outputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_weights import make_weights
from common import REAL_HEAD_STUDY, machine_description

STAGES: Final[tuple[str, ...]] = ("volume", "inference", "results")


def _weights(args: argparse.Namespace, folder: Path) -> tuple[Path | None, str | None]:
    if args.weights is not None:
        return args.weights, None
    if args.train_config is None:
        return None, None  # the bundled weights
    overrides = dict(yaml.safe_load(args.train_config.read_text())["model"]["overrides"])
    size = int(overrides.pop("input_size"))
    weights = make_weights(folder, size, **overrides)
    return weights.path, weights.sha256


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=REAL_HEAD_STUDY)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--weights", type=Path, help="weights file (default: the bundled ones)")
    source.add_argument("--train-config", type=Path, help="random weights of this architecture")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.study.is_dir():
        print(f"no study at {args.study} (../shared/data is absent)")
        return 0
    with tempfile.TemporaryDirectory(prefix="ichnet-infer-") as tmp:
        work = Path(tmp)
        weights, sha256 = _weights(args, work)
        config = {
            "node": {"storage_dir": str(work / "storage")},
            "engine": args.engine,
            "model": {"weights": str(weights) if weights else None, "cache_dir": str(work / "c")},
        }
        if sha256:
            config["model"]["weights_sha256"] = sha256
        (work / "node.yaml").write_text(yaml.safe_dump(config))
        command = [
            str(Path(sys.executable).with_name("ichnet-node")),
            "--log-level",
            "WARNING",
            "infer",
            str(args.study),
            "--config",
            str(work / "node.yaml"),
        ]
        walls: list[float] = []
        stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
        for run in range(args.runs + 1):
            out = work / f"out{run}"
            started = time.perf_counter()
            subprocess.run([*command, "--out", str(out)], check=True)
            wall = time.perf_counter() - started
            result = json.loads((out / "result.json").read_text())
            if run == 0:
                print(f"untimed first run (fills the engine cache): {wall:.2f} s")
                continue
            walls.append(wall)
            for stage in STAGES:
                stages[stage].append(float(result["timings_s"][stage]))
            print(
                f"run {run}: wall {wall:.2f} s; "
                + ", ".join(f"{s} {result['timings_s'][s]:.2f} s" for s in STAGES)
                + f"; engine {result['engine']}"
            )
    analysis = [sum(values) for values in zip(*stages.values(), strict=True)]
    print(f"machine: {machine_description()}")
    print(
        f"median of {args.runs}: wall {statistics.median(walls):.2f} s, analysis "
        f"(volume + inference + results) {statistics.median(analysis):.2f} s; "
        + ", ".join(f"{s} {statistics.median(v):.2f} s" for s, v in stages.items())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
