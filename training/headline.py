"""The headline figures of a candidate against the shipped weights: may it replace them?

Why: the project's rule is that bundled weights are only replaced by weights that are no worse
on any headline figure of the own test split or of the real normal head CT. Eighteen sessions
judged that by reading tables by hand; this module is the rule written down once, so every
candidate (``scripts/candidate.sh`` prints the verdict at its end) is judged the same way.

Figures are compared as the reports print them (AUCs, Dice and rates to three decimals, mL to
two), so a difference the tables do not show does not block a candidate. The real study's
subject probability is shown but not judged: its call (absent at the operating point) and its
false hemorrhage are.

    python -m training.headline CANDIDATE_DIR --shipped-metrics M.json --shipped-real-ct R.json

``CANDIDATE_DIR`` is an ``OUT_DIR`` of ``scripts/candidate.sh`` (``test/metrics.json``,
``real_ct/report.json``). Exit status 0: no headline figure is worse; 3: some are (listed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ichnet_core.labels import SUBTYPES

EXIT_MAY_SHIP: Final[int] = 0
EXIT_WORSE: Final[int] = 3

Reports = tuple[dict[str, Any], dict[str, Any]]  # test metrics.json, real_ct report.json


@dataclass(frozen=True)
class Figure:
    """One headline figure: how to read it, which way is better, the issue's target."""

    name: str
    read: Callable[[Reports], float]
    higher_is_better: bool | None  # None: shown, not judged
    decimals: int
    target: float | None = None


def _subject(output: str, key: str) -> Callable[[Reports], float]:
    return lambda reports: float(reports[0]["table2"]["subject"][output][key])


def _macro(reports: Reports) -> float:
    subject = reports[0]["table2"]["subject"]
    return sum(float(subject[name]["auc"]) for name in SUBTYPES) / len(SUBTYPES)


FIGURES: Final[tuple[Figure, ...]] = (
    Figure("subject AUC any", _subject("any", "auc"), True, 3, 0.98),
    Figure("slice AUC any", lambda r: float(r[0]["table2"]["slice"]["any"]["auc"]), True, 3, 0.97),
    Figure("subject subtype macro AUC", _macro, True, 3, 0.93),
    Figure("hemorrhage Dice", lambda r: float(r[0]["table3"]["hemorrhage"]["dice"]), True, 3, 0.85),
    Figure(
        "median abs. volume error, bleeding (mL)",
        lambda r: float(r[0]["hemorrhage_volume"]["median_absolute_error_ml_positive"]),
        False,
        2,
        1.0,
    ),
    Figure(
        "false hemorrhage per negative (mL)",
        lambda r: float(r[0]["hemorrhage_volume"]["false_positive_ml_in_negative_cases"]),
        False,
        2,
    ),
    Figure("sensitivity at the operating point", _subject("any", "sensitivity"), True, 3, 0.95),
    Figure("specificity at the operating point", _subject("any", "specificity"), True, 3, 0.90),
    Figure(
        "real normal CT: ICH called (1 = yes)",
        lambda r: float(r[1]["present"]["any"]),
        False,
        0,
        0.0,
    ),
    Figure(
        "real normal CT: false hemorrhage (mL)",
        lambda r: float(r[1]["hemorrhage_volume_ml"]),
        False,
        2,
        1.0,
    ),
    Figure("real normal CT: subject any", lambda r: float(r[1]["subject"]["any"]), None, 3),
    Figure("real normal CT: brain (mL)", lambda r: float(r[1]["brain_volume_ml"]), None, 0),
)


@dataclass(frozen=True)
class Row:
    """A figure of the candidate beside the shipped one, both rounded as reported."""

    figure: Figure
    candidate: float
    shipped: float

    @property
    def worse(self) -> bool:
        if self.figure.higher_is_better is None or self.candidate == self.shipped:
            return False
        return (self.candidate < self.shipped) == self.figure.higher_is_better


def compare(candidate: Reports, shipped: Reports) -> list[Row]:
    """Every headline figure of ``candidate`` beside ``shipped``."""
    return [
        Row(
            figure,
            round(figure.read(candidate), figure.decimals),
            round(figure.read(shipped), figure.decimals),
        )
        for figure in FIGURES
    ]


def format_rows(rows: Sequence[Row]) -> str:
    """A markdown table with a verdict line."""
    lines = ["| figure | candidate | shipped | target | worse |", "|---|---|---|---|---|"]
    for row in rows:
        spec = f".{row.figure.decimals}f"
        target = "" if row.figure.target is None else format(row.figure.target, spec)
        judged = "" if row.figure.higher_is_better is None else ("**worse**" if row.worse else "no")
        lines.append(
            f"| {row.figure.name} | {row.candidate:{spec}} | {row.shipped:{spec}} | {target} "
            f"| {judged} |"
        )
    worse = [row.figure.name for row in rows if row.worse]
    verdict = (
        "may replace the shipped weights: no headline figure is worse"
        if not worse
        else f"may not replace the shipped weights: worse on {', '.join(worse)}"
    )
    return "\n".join([*lines, "", verdict])


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.headline", description=__doc__)
    parser.add_argument("candidate", type=Path, help="OUT_DIR of scripts/candidate.sh")
    parser.add_argument("--shipped-metrics", type=Path, required=True)
    parser.add_argument("--shipped-real-ct", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        candidate = (
            _read(args.candidate / "test" / "metrics.json"),
            _read(args.candidate / "real_ct" / "report.json"),
        )
        shipped = (_read(args.shipped_metrics), _read(args.shipped_real_ct))
        rows = compare(candidate, shipped)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"error: {exc!r}", file=sys.stderr)
        return 1
    print(format_rows(rows))
    return EXIT_WORSE if any(row.worse for row in rows) else EXIT_MAY_SHIP


if __name__ == "__main__":
    sys.exit(main())
