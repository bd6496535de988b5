"""Series cache benchmark: slices per second per CPU core, DICOM decode vs the int16 npz cache.

    .venv/bin/python bench/series_cache.py [--files DIR] [--repeats 5] [--write-docs]

One process, one thread (= one core): read and decode the DICOM files of a series into its HU
volume; write and read the series cache; prepare a case onto the model grid (windows, resampling;
paper ICHNet 512x512) and read the prepared case. Without the series cache a public dataset's
case has no fingerprint, so every epoch pays "decode DICOM" + "prepare"; with it, the series is
decoded once, prepared once per model grid, and later epochs only "read prepared". Default input:
the real 512x512 head CT in ../shared/data/real (uncompressed DICOM, as RSNA 2019's files).
Per core; ``ichnet-train cache --workers N`` and the DataLoader's workers scale with the cores.
The machine is shared with other work: repeat a run before comparing rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from common import (
    REAL_HEAD_STUDY,
    markdown_table,
    plain_table,
    section_text,
    time_call,
    update_docs,
)

from ichnet_core.imaging.model_grid import ModelGrid
from training.data.dataset import prepare_case, read_prepared, write_prepared
from training.data.dicom_series import case_from_volume, load_volume
from training.data.series_cache import read_series, write_series


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=Path, default=REAL_HEAD_STUDY)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    files = sorted(args.files.glob("*.dcm"))
    if not files:
        raise SystemExit(f"no .dcm files in {args.files}")

    def decode():  # type: ignore[no-untyped-def]
        return case_from_volume(load_volume(files), case_id="bench/1", group_id="bench/1")

    case = decode()
    slices = case.hu.shape[0]
    with tempfile.TemporaryDirectory(prefix="ichnet-series-cache-") as tmp:
        path = Path(tmp) / "series.npz"
        prepared_path = Path(tmp) / "prepared.npz"
        write_prepared(prepared_path, prepare_case(case, ModelGrid(512)))
        timings = {
            "decode DICOM -> HU volume": time_call(decode, repeats=args.repeats),
            "write series cache (int16 npz)": time_call(
                lambda: write_series(path, case), repeats=args.repeats
            ),
            "read series cache": time_call(lambda: read_series(path), repeats=args.repeats),
            "prepare onto the model grid (512)": time_call(
                lambda: prepare_case(case, ModelGrid(512)), repeats=args.repeats
            ),
            "read prepared case": time_call(
                lambda: read_prepared(prepared_path, "bench/1"), repeats=args.repeats
            ),
        }
        cached_bytes = path.stat().st_size
        error = float(np.abs(read_series(path).hu - case.hu).max())
    dicom_bytes = sum(f.stat().st_size for f in files)
    rows = [
        [name, f"{t.median * 1000:.0f}", f"{slices / t.median:.0f}"] for name, t in timings.items()
    ]
    headers = ["step (1 core)", "ms per series", "slices/s per core"]
    print(f"{slices} slices of {case.hu.shape[1]}x{case.hu.shape[2]} from {args.files}")
    print(plain_table(headers, rows))
    notes = (
        f"{slices} slices of {case.hu.shape[1]}x{case.hu.shape[2]}; DICOM {dicom_bytes / slices / 1024:.0f} "
        f"KiB per slice, cache {cached_bytes / slices / 1024:.0f} KiB per slice; largest HU "
        f"difference after the round trip {error:.2f} (rounding to whole HU)."
    )
    print(notes)
    if args.write_docs:
        update_docs(
            "series_cache",
            section_text(
                "Series cache (training data)", markdown_table(headers, rows), notes=notes
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
