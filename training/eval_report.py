"""The report of an evaluation: ``tables.md``, ``metrics.json``, ``cases.csv``, ROC plots.

Kept apart from :mod:`training.evaluate`, which computes the figures: how they are laid out for a
reader changes for other reasons than how they are measured.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from ichnet_core.labels import SEGMENTATION_CLASSES
from training.evaluate import SUBJECT_FROM_SLICES, EvalResult
from training.metrics import LEVELS, format_metric

logger = logging.getLogger(__name__)


def format_markdown(result: EvalResult, title: str = "Evaluation") -> str:
    """Table 2, Table 3 and the volume errors as Markdown."""
    if result.operating_points is not None:
        decision = f"decision thresholds per output: {result.operating_points.describe()}"
    else:
        decision = f"decision threshold {result.threshold}"
    lines = [f"# {title}", "", f"Cases: {result.n_cases}; {decision}.", ""]
    lines += ["## Table 2: classification", ""]
    if result.subject_source == SUBJECT_FROM_SLICES:
        lines += ["Subject level derived as the maximum of the slice probabilities.", ""]
    header = "| level | class | n | positives | accuracy | sensitivity | specificity | F1 | AUC |"
    lines += [header, "|" + "---|" * 9]
    for level, rows in result.table2.items():
        for name, metrics in rows.items():
            if metrics is None:
                lines.append(f"| {level} | {name} | 0 | 0 | n/a | n/a | n/a | n/a | n/a |")
                continue
            lines.append(
                f"| {level} | {name} | {metrics.n} | {metrics.positives} | "
                f"{format_metric(metrics.accuracy)} | {format_metric(metrics.sensitivity)} | "
                f"{format_metric(metrics.specificity)} | {format_metric(metrics.f1)} | {format_metric(metrics.auc)} |"
            )
    lines += ["", "## Table 3: segmentation (Dice, mean over cases)", ""]
    lines += ["| class | Dice | cases |", "|---|---|---|"]
    for name in (*SEGMENTATION_CLASSES, "mean"):
        row = result.table3[name]
        lines.append(f"| {name} | {format_metric(row['dice'])} | {row['n']} |")
    lines += [
        "",
        "Hemorrhage Dice over cases with labelled hemorrhage; brain and non-brain over cases "
        "with complete segmentations; mean = mean of the three.",
        "",
        "## Hemorrhage volume",
        "",
    ]
    if result.volume is None:
        lines.append("No case with both a hemorrhage segmentation and a segmentation output.")
    else:
        v = result.volume
        lines += [
            "| cases | mean abs. error (mL) | mean error (mL) | mean relative error | "
            "cases (relative) | false-positive mL in negative cases |",
            "|---|---|---|---|---|---|",
            f"| {v['n']} | {format_metric(v['mean_absolute_error_ml'], 2)} | {format_metric(v['mean_error_ml'], 2)} "
            f"| {format_metric(v['mean_relative_error'])} | {v['n_relative']} | "
            f"{format_metric(v['false_positive_ml_in_negative_cases'], 2)} |",
        ]
    if result.volume is not None:
        lines += [
            "",
            f"Median absolute volume error: {format_metric(result.volume['median_absolute_error_ml'], 2)} mL "
            f"over all cases, {format_metric(result.volume['median_absolute_error_ml_positive'], 2)} mL over "
            "cases with hemorrhage.",
        ]
    if result.compartment_volume:
        lines += [
            "",
            "## Volume per compartment",
            "",
            "| compartment | cases | mean abs. error (mL) | median abs. error (mL) | mean error (mL) "
            "| labelled voxels found | found and named so | hemorrhage Dice of its cases |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, v in result.compartment_volume.items():
            lines.append(
                f"| {name} | {v['n']} | {format_metric(v['mean_absolute_error_ml'], 2)} | "
                f"{format_metric(v['median_absolute_error_ml'], 2)} | {format_metric(v['mean_error_ml'], 2)} "
                f"| {format_metric(v.get('found'))} | {format_metric(v.get('named'))} "
                f"| {format_metric(v.get('case_dice'))} ({v.get('case_dice_n', 0)}) |"
            )
        lines += [
            "",
            "Labelled voxels found: the share of each compartment's labelled voxels, pooled over "
            "the cases, segmented as hemorrhage (of any compartment); found and named so: the share "
            "of those found that the segmentation names this compartment; hemorrhage Dice of its "
            "cases: the mean hemorrhage Dice (all compartments together) of the cases that hold "
            "this compartment (how many in brackets; a case with two compartments counts in both).",
        ]
    if result.intervals:
        lines += ["", "## 95 % intervals (case bootstrap)", "", "| figure | low | high |"]
        lines.append("|---|---|---|")
        for name, interval in result.intervals.items():
            if interval is None:
                lines.append(f"| {name} | n/a | n/a |")
            else:
                lines.append(
                    f"| {name} | {format_metric(interval.low)} | {format_metric(interval.high)} |"
                )
    if result.loss:
        lines += [
            "",
            "Mean loss terms: " + ", ".join(f"{k} {v:.4f}" for k, v in result.loss.items()),
        ]
    return "\n".join(lines) + "\n"


def plot_roc(result: EvalResult, path: Path, level: str) -> Path | None:
    """ROC curves of ``level`` (one per class with both outcomes present) as PNG."""
    curves = result.roc.get(level, {})
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr) in curves.items():
        metrics = result.table2[level][name]
        auc = metrics.auc if metrics is not None else None
        axis.plot(fpr, tpr, label=f"{name} (AUC {format_metric(auc)})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axis.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC, {level} level")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_cases(result: EvalResult, path: Path) -> Path:
    """Write the per-case rows of ``result`` as CSV (empty cells where unknown)."""
    columns = list(result.cases[0]) if result.cases else ["case_id"]
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in result.cases:
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return Path(path)


def _csv_cell(value: Any) -> Any:
    """Floats to 6 significant digits, ``None`` to an empty cell."""
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def write_report(result: EvalResult, out_dir: Path, title: str = "Evaluation") -> dict[str, Path]:
    """Write ``metrics.json``, ``tables.md``, ``cases.csv`` and ``roc_<level>.png``; returns
    the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "metrics.json", "markdown": out_dir / "tables.md"}
    paths["cases"] = write_cases(result, out_dir / "cases.csv")
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(format_markdown(result, title), encoding="utf-8")
    for level in LEVELS:
        png = plot_roc(result, out_dir / f"roc_{level}.png", level)
        if png is not None:
            paths[f"roc_{level}"] = png
    logger.info("wrote evaluation report to %s", out_dir)
    return paths
