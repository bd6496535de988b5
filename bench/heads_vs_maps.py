"""Do a checkpoint's classification heads separate the cases as well as its hemorrhage maps?

    .venv/bin/python bench/heads_vs_maps.py CHECKPOINT [--split val] [--cases 16]

For every case of the split (whole series, as validation runs them) this prints the subject
``any`` of the subject head, the highest slice-head ``any``, the highest hemorrhage probability
of the segmentation and its count of hemorrhage pixels (p > 0.5, model grid); then the subject
and slice AUCs of each score. Heads far behind the maps mean the heads, not the features of the
segmentation, are what holds a run back: the finding that led to
``ICHNetConfig.cls_embedding`` (first 1.0 mm run, step 5043, 16 validation cases: subject AUC
0.50 from the head, 0.92 from the maps' peak, 0.88 from their pixel count; slice AUC 0.70 vs
0.89).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ichnet_core.labels import HEMORRHAGE
from ichnet_core.models.ichnet import seg_probabilities
from training.data.build import build_split
from training.data.dataset import make_sample, prepare_case
from training.data.splits import Split
from training.metrics import roc_auc
from training.step import forward_batch
from training.trainer import load_trained_model

ANY: int = 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--split", choices=[s.value for s in Split], default=Split.VAL.value)
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    model, grid, config = load_trained_model(args.checkpoint, device)
    source = build_split(config, Split(args.split))
    subject: dict[str, list[float]] = {"truth": [], "head": [], "slice head": [], "map": []}
    subject["map pixels"] = []
    slices: dict[str, list[float]] = {"truth": [], "head": [], "map": []}
    print("case, truth, subject head, max slice head, max map p, map pixels")
    for index in range(min(args.cases, len(source))):
        prepared = prepare_case(source[index], grid)
        with torch.inference_mode():
            batch = forward_batch(model, [make_sample(prepared)], device)
        assert batch.slice_logits is not None and batch.subject_logits is not None
        assert batch.seg_logits is not None and prepared.slice_labels is not None
        assert prepared.subject_labels is not None
        slice_any = torch.sigmoid(batch.slice_logits.float()).reshape(-1, 6)[:, ANY].numpy()
        blood = seg_probabilities(batch.seg_logits.float())[:, HEMORRHAGE].numpy()
        peak = blood.reshape(len(blood), -1).max(axis=1)
        pixels = (blood > 0.5).reshape(len(blood), -1).sum(axis=1)
        row = {
            "truth": float(prepared.subject_labels[ANY]),
            "head": float(torch.sigmoid(batch.subject_logits.float()).reshape(-1)[ANY]),
            "slice head": float(slice_any.max()),
            "map": float(peak.max()),
            "map pixels": float(pixels.sum()),
        }
        for key, value in row.items():
            subject[key].append(value)
        print(prepared.case_id, *(f"{v:.3f}" for v in row.values()), sep=", ")
        known = ~np.isnan(prepared.slice_labels[:, ANY])
        slices["truth"] += list(prepared.slice_labels[known, ANY])
        slices["head"] += list(slice_any[known])
        slices["map"] += list(peak[known])
    truth = np.array(subject.pop("truth"))
    for name, scores in subject.items():
        print(f"subject AUC from {name}: {roc_auc(truth, np.array(scores))}")
    slice_truth = np.array(slices.pop("truth"))
    for name, scores in slices.items():
        print(f"slice AUC from {name}: {roc_auc(slice_truth, np.array(scores))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
