"""Series selection benchmark: what the image head check costs per series, and how many slices it reads.

    .venv/bin/python bench/selection.py [--repeats 7] [--write-docs]

The headers of each series are read once (``stop_before_pixels``, as the node reads its spool);
then, per repeat, ``select_series`` runs on them: the header rules, and where the headers do not
decide (or the kernel name is unknown) the image check, which reads the pixels of at most five
slices from the middle of the series from their files and looks for a skull. "image check" is
that step alone (read + decode + inspect the sampled slices); "select_series" is the whole
decision. Pixel reads are counted by wrapping ``pydicom.dcmread``. Target (issue 13): image
check < 0.3 s per series.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import pydicom
from pydicom import Dataset, dcmwrite

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    REAL_HEAD_STUDY,
    markdown_table,
    plain_table,
    section_text,
    time_call,
    update_docs,
)

from dicom_node import selection
from dicom_node.config import SelectionSection
from ichnet_core.imaging.volume import slice_geometry
from tests.dicom_node.head_study import head_study, non_head_series

TARGET_S: Final[float] = 0.3


def _write(datasets: Sequence[Dataset], folder: Path) -> list[Dataset]:
    """Write ``datasets`` as files and return their headers read back (with ``filename``)."""
    folder.mkdir(parents=True)
    for index, ds in enumerate(datasets):
        dcmwrite(folder / f"{index:04d}.dcm", ds, enforce_file_format=True)
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]


def _strip(datasets: Sequence[Dataset], **changes: str) -> list[Dataset]:
    """Copies without anything that names a body part, with ``changes`` applied."""
    copies = []
    for ds in datasets:
        new = copy.deepcopy(ds)
        for keyword in (
            "BodyPartExamined",
            "StudyDescription",
            "SeriesDescription",
            "ProtocolName",
        ):
            if keyword in new:
                del new[keyword]
        for keyword, value in changes.items():
            setattr(new, keyword, value)
        copies.append(new)
    return copies


def _cases(work: Path) -> list[tuple[str, list[Dataset]]]:
    study = head_study()
    cases = [
        ("synthetic head 5 mm 256x256, no labels", _write(_strip(study.soft), work / "soft")),
        (
            "synthetic thin 1.25 mm 256x256, no labels",
            _write(_strip(study.thin), work / "thin"),
        ),
        (
            "synthetic abdomen phantom 256x256, no labels",
            _write(non_head_series(study.soft), work / "abdomen"),
        ),
        (
            "synthetic bone kernel, kernel name unknown",
            _write(
                _strip(study.bone, BodyPartExamined="HEAD", ConvolutionKernel="XR7"), work / "bone"
            ),
        ),
    ]
    if REAL_HEAD_STUDY.is_dir():
        real = [pydicom.dcmread(p) for p in sorted(REAL_HEAD_STUDY.glob("*.dcm"))]
        cases.insert(
            0,
            (
                "real GE head 512x512, Siemens-style headers (BASE 3MM)",
                _write(_strip(real, BodyPartExamined="BASE 3MM"), work / "real"),
            ),
        )
        cases.append(
            ("real GE head, headers decide (no image check)", _write(real, work / "real-labelled"))
        )
    else:
        print(f"note: {REAL_HEAD_STUDY} absent; the real head rows are left out", file=sys.stderr)
    return cases


def _count_reads(fn: Callable[[], Any]) -> int:
    """How many files ``fn`` reads with their pixel data."""
    reads = 0
    original = pydicom.dcmread

    def counting(path: Any, *args: Any, **kwargs: Any) -> Dataset:
        nonlocal reads
        if not kwargs.get("stop_before_pixels"):
            reads += 1
        return original(path, *args, **kwargs)

    pydicom.dcmread = counting  # type: ignore[assignment]
    try:
        fn()
    finally:
        pydicom.dcmread = original  # type: ignore[assignment]
    return reads


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    rules = SelectionSection()
    rows = []
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="ichnet-bench-selection-") as tmp:
        for name, headers in _cases(Path(tmp)):
            result = selection.select_series(headers, rules)
            reads = _count_reads(lambda h=headers: selection.select_series(h, rules))
            geometry = slice_geometry(headers)

            def image_check(h: list[Dataset] = headers, g: Any = geometry) -> None:
                selection.SampledSlices(h, g).head_check()

            check = time_call(image_check, repeats=args.repeats)
            total = time_call(
                lambda h=headers: selection.select_series(h, rules), repeats=args.repeats
            )
            if reads:
                worst = max(worst, check.median)
            verdict = "accepted" if result.accepted else "skipped"
            rows.append(
                [
                    name,
                    len(headers),
                    reads,
                    f"{check.median:.3f}" if reads else "-",
                    f"{total.median:.3f}",
                    verdict,
                ]
            )
    headers_row = [
        "series",
        "slices",
        "pixel files read",
        "image check median s",
        "select_series median s",
        "decision",
    ]
    print(plain_table(headers_row, rows))
    print(f"slowest image check: {worst:.3f} s (target < {TARGET_S} s)")
    if args.write_docs:
        notes = (
            f"Median of {args.repeats} runs after one warm-up, files in the page cache. "
            '"pixel files read" counts the files `select_series` opens with pixel data; '
            "the image check column times reading, decoding and inspecting those slices "
            f"(target < {TARGET_S} s per series)."
        )
        update_docs(
            "selection",
            section_text(
                "Series selection: image head check", markdown_table(headers_row, rows), notes=notes
            ),
        )
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
