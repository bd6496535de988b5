"""Loss and validation curves of a run as PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from training.losses import Term
from training.runlog import read_csv


def _pyplot() -> ModuleType:
    """matplotlib's pyplot on the file-only Agg backend (no display on training machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(run_dir: Path) -> list[Path]:
    """Write ``curves_loss.png`` and ``curves_validation.png`` from the run's CSV logs.

    Returns the files written (none before the first logged step).
    """
    run_dir = Path(run_dir)
    steps = read_csv(run_dir / "steps.csv")
    epochs = read_csv(run_dir / "metrics.csv")
    written: list[Path] = []
    plt = _pyplot()
    if steps:
        figure, axis = plt.subplots(figsize=(7, 4))
        x = [row["step"] for row in steps]
        axis.plot(x, [row["loss"] for row in steps], label="total (weighted)", color="black")
        for term in Term:
            y = [row[f"loss_{term.value}"] for row in steps]
            if any(v is not None for v in y):
                axis.plot(x, y, label=term.value, linewidth=1)
        val = [(row["step"], row["val_loss"]) for row in epochs if row["val_loss"] is not None]
        if val:
            axis.plot(*zip(*val, strict=True), "o-", label="validation (raw sum)", color="red")
        axis.set(xlabel="optimiser step", ylabel="loss", title="Training loss")
        axis.legend(fontsize="small")
        figure.tight_layout()
        path = run_dir / "curves_loss.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    metric_names = (
        "val_subject_auc_any",
        "val_slice_auc_any",
        "val_subject_f1_any",
        "val_dice_hemorrhage",
        "val_dice_mean",
    )
    validated = [row for row in epochs if row["val_loss"] is not None]
    if validated:
        figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
        loss_axis.plot(
            [row["epoch"] for row in validated], [row["val_loss"] for row in validated], "o-"
        )
        loss_axis.set(xlabel="epoch", ylabel="sum of raw loss terms", title="Validation loss")
        for name in metric_names:
            points = [(row["epoch"], row[name]) for row in validated if row[name] is not None]
            if points:
                metric_axis.plot(*zip(*points, strict=True), "o-", label=name.removeprefix("val_"))
        real = [
            (row["epoch"], row["val_real_normal_any"])
            for row in validated
            if row.get("val_real_normal_any") is not None
        ]
        if real:
            metric_axis.plot(
                *zip(*real, strict=True), "x--", label="real normal CT: any (low is right)"
            )
            false_ml = [
                (row["epoch"], row["val_real_normal_false_ml"])
                for row in validated
                if row.get("val_real_normal_false_ml") is not None
            ]
            ml_axis = metric_axis.twinx()
            ml_axis.plot(*zip(*false_ml, strict=True), "x:", color="grey")
            ml_axis.set(ylabel="real normal CT: false hemorrhage (mL, grey)")
        metric_axis.set(xlabel="epoch", ylabel="metric", title="Validation metrics", ylim=(0, 1.02))
        if metric_axis.get_legend_handles_labels()[0]:
            metric_axis.legend(fontsize="small")
        figure.tight_layout()
        path = run_dir / "curves_validation.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written
