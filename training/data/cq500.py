"""CQ500 (qure.ai; Chilamkurthy et al., Lancet 2018): head CT with subject-level reads.

Layout as distributed::

    CQ500CT0 CQ500CT0/Unknown Study/CT PLAIN THIN/CT000000.dcm ...   (possibly under qctNN/)
    CQ500CT0 CQ500CT0/Unknown Study/CT 5mm/...
    reads.csv   name,Category,R1:ICH,R1:IPH,R1:IVH,R1:SDH,R1:EDH,R1:SAH,R1:BleedLocation-Left,...,
                R2:..., R3:...        name = CQ500-CT-0, one row per subject, three readers

Labels are per subject only, from three radiologists; the label of a finding is the majority
(at least two of three readers). A subject has several series (thin/thick, soft-tissue/bone
kernel, some with contrast); one is chosen per subject: series whose description matches an
exclusion pattern (bone kernel, post-contrast) are dropped and the slice thickness closest to
``preferred_thickness_mm`` wins (ties: more slices).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from ichnet_core.labels import CLASS_NAMES
from training.data.case import LabelledCase, unknown_labels
from training.data.csv_utils import LabelFileError, binary, read_rows
from training.data.dicom_series import case_from_volume, load_volume, read_header
from training.data.source import CaseEntry, CaseSource

logger = logging.getLogger(__name__)

READS_CSV: Final[str] = "reads.csv"
READERS: Final[tuple[str, ...]] = ("R1", "R2", "R3")
#: reads.csv finding names and the class each is.
CQ500_FINDINGS: Final[dict[str, str]] = {
    "ICH": "any",
    "IPH": "CPH",
    "IVH": "IVH",
    "EDH": "EDH",
    "SDH": "SDH",
    "SAH": "SAH",
}
#: A finding is present when at least this many readers marked it.
MAJORITY: Final[int] = 2
#: Series descriptions (case-insensitive regular expressions) that are not plain head CT.
DEFAULT_EXCLUDE_SERIES: Final[tuple[str, ...]] = (
    r"\bBONE\b",
    r"\bPOST\b",
    r"(?<!PRE )CONTRAST",
    r"\d+\s*cc\b",
)
DEFAULT_PREFERRED_THICKNESS_MM: Final[float] = 5.0
_SUBJECT_DIR = re.compile(r"^CQ500-?CT-?(\d+)\b", re.IGNORECASE)
_SUBJECT_NAME = re.compile(r"^CQ500-CT-(\d+)$", re.IGNORECASE)
#: Subject folders sit at most this deep under the root (root/qctNN/CQ500CTn CQ500CTn).
_MAX_SUBJECT_DEPTH: Final[int] = 3
_HEADER_TAGS: Final[tuple[str, ...]] = ("SeriesDescription", "SliceThickness", "SeriesInstanceUID")


def read_reads(path: Path) -> dict[int, np.ndarray]:
    """``{subject number: (6,) majority labels}`` from ``reads.csv``.

    Raises
    ------
    LabelFileError
        Missing reader columns, malformed names, values other than 0/1, a subject twice.
    """
    required = ["name"] + [f"{r}:{f}" for r in READERS for f in CQ500_FINDINGS]
    labels: dict[int, np.ndarray] = {}
    for line, row in read_rows(path, required):
        match = _SUBJECT_NAME.match(row["name"])
        if not match:
            raise LabelFileError(f"{path}:{line}: name {row['name']!r} is not CQ500-CT-<number>")
        values = unknown_labels()
        for finding, class_name in CQ500_FINDINGS.items():
            votes = sum(
                binary(path, line, f"{r}:{finding}", row[f"{r}:{finding}"]) for r in READERS
            )
            values[CLASS_NAMES.index(class_name)] = float(votes >= MAJORITY)
        number = int(match.group(1))
        if number in labels:
            raise LabelFileError(f"{path}:{line}: subject {row['name']} listed twice")
        labels[number] = values
    return labels


@dataclass(frozen=True)
class SeriesCandidate:
    """One series folder of a subject."""

    folder: Path
    description: str
    thickness_mm: float | None
    files: tuple[Path, ...]


def _subject_dirs(root: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    frontier = [root]
    for _ in range(_MAX_SUBJECT_DEPTH):
        next_frontier = []
        for folder in frontier:
            for child in sorted(p for p in folder.iterdir() if p.is_dir()):
                match = _SUBJECT_DIR.match(child.name)
                if match:
                    found.setdefault(int(match.group(1)), child)
                else:
                    next_frontier.append(child)
        frontier = next_frontier
    return found


def _candidates(subject_dir: Path) -> list[SeriesCandidate]:
    folders: dict[Path, list[Path]] = {}
    for path in sorted(subject_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() == ".dcm":
            folders.setdefault(path.parent, []).append(path)
    candidates = []
    for folder, files in folders.items():
        header = read_header(files[0], _HEADER_TAGS)
        description = str(header.get("SeriesDescription", "") or folder.name)
        thickness = header.get("SliceThickness")
        candidates.append(
            SeriesCandidate(
                folder=folder,
                description=f"{folder.name} | {description}",
                thickness_mm=float(thickness) if thickness not in (None, "") else None,
                files=tuple(files),
            )
        )
    return candidates


def choose_series(
    candidates: Sequence[SeriesCandidate],
    preferred_thickness_mm: float,
    exclude: Sequence[str],
    min_slices: int,
) -> SeriesCandidate | None:
    """The series to use, or ``None`` when no candidate passes the rules."""
    patterns = [re.compile(pattern, re.IGNORECASE) for pattern in exclude]
    usable = [
        c
        for c in candidates
        if len(c.files) >= min_slices and not any(p.search(c.description) for p in patterns)
    ]
    if not usable:
        return None

    def rank(c: SeriesCandidate) -> tuple[float, int]:
        distance = (
            abs(c.thickness_mm - preferred_thickness_mm) if c.thickness_mm is not None else np.inf
        )
        return (float(distance), -len(c.files))

    return min(usable, key=rank)


class Cq500Source(CaseSource):
    """CQ500 subjects that have reads and a usable series.

    Parameters
    ----------
    root:
        Folder with the subject folders (directly or one level down) and ``reads.csv``.
    reads_csv:
        Name of the reads file inside ``root``.
    preferred_thickness_mm:
        Slice thickness to prefer when choosing a subject's series.
    exclude_series:
        Regular expressions; a series whose folder name or SeriesDescription matches one is
        never used.
    min_slices:
        Series with fewer files are not used (scouts, partial uploads).
    """

    name = "cq500"

    def __init__(
        self,
        root: Path,
        *,
        reads_csv: str = READS_CSV,
        preferred_thickness_mm: float = DEFAULT_PREFERRED_THICKNESS_MM,
        exclude_series: Sequence[str] = DEFAULT_EXCLUDE_SERIES,
        min_slices: int = 10,
    ) -> None:
        self.root = Path(root)
        self.labels = read_reads(self.root / reads_csv)
        chosen: list[tuple[int, SeriesCandidate]] = []
        for number, folder in sorted(_subject_dirs(self.root).items()):
            if number not in self.labels:
                logger.warning("CQ500: subject folder %s has no row in %s", folder, reads_csv)
                continue
            series = choose_series(
                _candidates(folder), preferred_thickness_mm, exclude_series, min_slices
            )
            if series is None:
                logger.warning("CQ500: no usable series for subject %d in %s", number, folder)
                continue
            logger.debug("CQ500 subject %d: series %s", number, series.description)
            chosen.append((number, series))
        self._chosen = tuple(chosen)
        self._entries = tuple(
            CaseEntry(case_id=f"{self.name}/CQ500-CT-{n}", group_id=f"{self.name}/CQ500-CT-{n}")
            for n, _ in chosen
        )
        logger.info("CQ500 at %s: %d subjects with reads and a series", self.root, len(chosen))

    @property
    def entries(self) -> Sequence[CaseEntry]:
        return self._entries

    def load(self, index: int) -> LabelledCase:
        number, series = self._chosen[index]
        entry = self._entries[index]
        volume = load_volume(series.files)
        return case_from_volume(
            volume,
            case_id=entry.case_id,
            group_id=entry.group_id,
            subject_labels=self.labels[number].copy(),
        )
