"""Throughput: studies per minute, one node with its own engine vs node front ends sharing Triton.

    .venv/bin/python bench/triton_throughput.py [--seconds 15] [--front-ends 1,2,4] [--write-docs]

Every front end is a separate process doing what the node's worker does for each study:
``engine.predict(volume)`` on the real 28-slice head CT (window stack and resampling, the network,
labels back at source resolution), one study after the other. Measured:

* ``local``: one front end with ``engine: onnxruntime`` in its own process (today's node);
* ``triton xN``: N front ends with ``engine: triton`` sharing one tritonserver (nvidia-pytriton's
  bundle, the Python-backend model of ``ichnet-node triton-repo``, one model instance).

The knee is where adding front ends stops adding studies per minute. On this 2-core CPU the
server and the front ends share the same cores, so the numbers say what the split costs on one
machine, not what a GPU host gains; the GPU figures printed after the table are a projection from the
measured H100 network times (docs/benchmarks.md), not a measurement.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REAL_HEAD_STUDY, markdown_table, plain_table, section_text, update_docs

#: Measured on one H100 (docs/benchmarks.md, "GPU check results"): whole network, fp16 + CUDA
#: graphs, 28 slices: 0.033 s at 256 input, 0.115 s at 512 input.
H100_NETWORK_S: Final[dict[int, float]] = {256: 0.033, 512: 0.115}


def _front_end(engine_name: str, url: str, cache_dir: str, seconds: float, start: Any) -> int:
    """Analyse the study again and again for ``seconds`` once every front end is ready (the
    ``start`` barrier); returns the studies done."""
    from dicom_node.config import parse_config
    from dicom_node.triton_engine import node_engine
    from dicom_node.workflow import read_datasets
    from ichnet_core.imaging.volume import build_volume
    from ichnet_core.models.weights import load_weights

    datasets, _ = read_datasets(sorted(REAL_HEAD_STUDY.glob("*.dcm")))
    volume = build_volume(datasets)
    data: dict[str, Any] = {"engine": engine_name, "model": {"cache_dir": cache_dir}}
    if url:
        data["triton"] = {"url": url}
    config = parse_config(data)
    engine = node_engine(config, load_weights())
    engine.predict(volume)  # warm: first call pays for kernel choice / connection
    start.wait()
    done = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        engine.predict(volume)
        done += 1
    return done


def _run(engine_name: str, front_ends: int, url: str, cache_dir: str, seconds: float) -> float:
    """Studies per minute of ``front_ends`` processes together."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(front_ends) as pool:
        start = manager.Barrier(front_ends)
        counts = pool.starmap(
            _front_end, [(engine_name, url, cache_dir, seconds, start)] * front_ends
        )
    return sum(counts) * 60.0 / seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--front-ends", default="1,2,4")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    from ichnet_core.export import cached_export
    from ichnet_core.models.weights import load_weights
    from ichnet_core.serving.triton_repo import write_repository
    from tests.integration.node_process import reserve_ports
    from tests.integration.triton import start_triton, triton_environment

    env = triton_environment()
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="ichnet-triton-bench-") as tmp:
        work = Path(tmp)
        cache = str(work / "engine-cache")
        weights = load_weights()
        write_repository(weights, cached_export(weights, cache), work / "repository")
        local = _run("onnxruntime", 1, "", cache, args.seconds)
        rows.append(["1 node, local onnxruntime", 1, f"{local:.1f}"])
        server = start_triton(
            env, work / "repository", work / "tritonserver.log", ports=tuple(reserve_ports(2))
        )
        try:
            for count in (int(n) for n in args.front_ends.split(",")):
                rate = _run("triton", count, server.url, cache, args.seconds)
                rows.append([f"{count} front end(s) + 1 Triton (1 instance)", count, f"{rate:.1f}"])
        finally:
            server.stop()
    headers = ["setup (28-slice head CT, bundled 96 px weights)", "front ends", "studies/min"]
    print(plain_table(headers, rows))
    projection = ", ".join(
        f"{size} px input: {60.0 / seconds:.0f} studies/min of 28 slices per H100, i.e. the "
        f"preparation of about {60.0 / seconds / local:.0f} front ends like the local row's"
        for size, seconds in H100_NETWORK_S.items()
    )
    notes = (
        f"{args.seconds:.0f} s per row (one study more or less moves a row by "
        f"{60.0 / args.seconds:.0f} studies/min) on this machine: 2 cores shared with other work, "
        f"server and front ends compete for them, so the knee (more front ends, no more studies) "
        f"lies at about {os.cpu_count()} front ends, the core count, and Triton adds its gRPC "
        "copies on the same cores. Projection, not a measurement: one GPU running only the "
        "network (fp16 + CUDA graphs times measured on an H100) would take "
        f"{projection} (each of those spends about {60.0 / local:.1f} s per study on reading, "
        "windowing, resampling, the 96 px network and labels)."
    )
    print(notes)
    if args.write_docs:
        update_docs(
            "triton_throughput",
            section_text(
                "Throughput: node with local engine vs front ends + Triton",
                markdown_table(headers, rows),
                notes=notes,
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
