"""Peak memory of the node for a long series: a 300-slice 512x512 synthetic head CT, end to end.

    .venv/bin/python bench/memory.py [--slices 300] [--engines torch onnxruntime] [--write-docs]

The series comes from the synthetic generator (``ichnet_core.synthetic``: one positive case at
512x512 at its finest slice spacing, about 260 slices, completed to ``--slices`` by repeating the
top slices further along the normal; see :func:`make_series`). For each engine a fresh
``ichnet-node serve`` subprocess receives it from dcmtk storescu, analyses it and sends SEG + SR to
a pynetdicom SCP; the number is the node process's peak resident set size (``VmHWM`` in
/proc/<pid>/status) after the results arrived, next to its size once it was listening.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, plain_table, section_text, update_docs
from peers import NODE_AE, node_serve, peak_rss_mib, require_dcmtk, result_receiver, storescu

#: Extent along the slice normal the generator covers (mm), to turn a slice count into a spacing.
HEAD_EXTENT_MM: Final[float] = 137.0
SEED: Final[int] = 300
#: The generator's finest slice spacing.
MIN_SPACING_MM: Final[float] = 0.5
RESULT_TIMEOUT_S: Final[float] = 1800.0


def make_series(out_dir: Path, slices: int) -> list[Path]:
    """A synthetic 512x512 positive case with about ``slices`` slices, written as DICOM.

    The generator's finest slice spacing (0.5 mm) gives about 260 slices over the head; a longer
    series is completed by repeating the top slices further along the slice normal (new SOP
    Instance UIDs and positions, same spacing), which keeps the geometry valid.
    """
    import copy

    import numpy as np
    from pydicom import dcmwrite
    from pydicom.uid import generate_uid

    from ichnet_core.synthetic.case import generate_case
    from ichnet_core.synthetic.config import SyntheticConfig
    from ichnet_core.synthetic.dicom import to_datasets

    spacing = max(MIN_SPACING_MM, HEAD_EXTENT_MM / slices)
    config = SyntheticConfig(rows=512, columns=512, slice_spacing_mm=(spacing, spacing))
    started = time.perf_counter()
    datasets = to_datasets(generate_case(SEED, config, hemorrhage=True))
    generated = len(datasets)
    orientation = np.array(datasets[-1].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    step = np.array(datasets[-1].ImagePositionPatient, dtype=float) - np.array(
        datasets[-2].ImagePositionPatient, dtype=float
    )
    step = normal * float(np.dot(step, normal))
    while len(datasets) < slices:
        source = datasets[generated - 1 - (len(datasets) - generated) % generated]
        extra = copy.deepcopy(source)
        extra.SOPInstanceUID = generate_uid()
        extra.file_meta.MediaStorageSOPInstanceUID = extra.SOPInstanceUID
        position = np.array(datasets[-1].ImagePositionPatient, dtype=float) + step
        extra.ImagePositionPatient = [f"{v:.4f}" for v in position]
        extra.InstanceNumber = len(datasets) + 1
        datasets.append(extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, dataset in enumerate(datasets):
        path = out_dir / f"CT{index + 1:04d}.dcm"
        dcmwrite(path, dataset, enforce_file_format=True)
        paths.append(path)
    print(
        f"synthetic series: {generated} generated + {len(datasets) - generated} repeated slices "
        f"in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return paths


def current_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--engines", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--series-dir", type=Path, default=None, help="reuse a written series")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    require_dcmtk()
    headers = ["engine", "slices", "RSS listening MiB", "peak RSS MiB", "end to end s"]
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="ichnet-memory-") as tmp:
        work = Path(tmp)
        series_dir = args.series_dir or work / "series"
        files = (
            sorted(series_dir.glob("*.dcm"))
            if args.series_dir
            else make_series(series_dir, args.slices)
        )
        for engine in args.engines:
            run_dir = work / engine
            run_dir.mkdir()
            with (
                result_receiver() as receiver,
                node_serve(
                    run_dir,
                    result_port=receiver.port,
                    engine=engine,
                    complete_after_s=2.0,
                    cache_dir=work / "engine-cache",
                ) as node,
            ):
                listening = current_rss_mib(node.process.pid)
                started = time.perf_counter()
                storescu(node.port, NODE_AE, files)
                if not receiver.wait_for(2, RESULT_TIMEOUT_S):
                    raise SystemExit(f"{engine}: no results; see {node.log_path}")
                elapsed = time.perf_counter() - started
                peak = peak_rss_mib(node.process.pid)
            rows.append(
                [engine, str(len(files)), f"{listening:.0f}", f"{peak:.0f}", f"{elapsed:.1f}"]
            )
            print(plain_table(headers, rows), flush=True)
    if args.write_docs:
        notes = (
            "Peak = VmHWM of the node process over its whole life (start-up, receiving, volume, "
            "inference, SEG/SR, sending). Default model (256 input), 16 slices per chunk. The "
            "series is synthetic (ichnet_core.synthetic, 512x512, int16): the generator's finest "
            "spacing gives ~260 slices, the rest repeats the top slices further along the normal."
        )
        update_docs(
            "memory",
            section_text(
                f"Memory: node peak RSS, {len(files)}-slice study",
                markdown_table(headers, rows),
                notes=notes,
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
