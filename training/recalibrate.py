"""BatchNorm statistics of trained weights recomputed on whole training series, as inference sees them.

Why: a training step normalises its batch by the batch's own statistics, and the running
statistics the weights carry (and their moving average) are the average of those of training
batches: here nine in ten are 128-pixel crops of 8 slices placed on bleeds, one in ten whole
slices, all augmented. The node normalises whole 256-pixel slices of whole series (more air,
bone and scalp, less blood) with those statistics. On run 11's step 20160 the statistics
recomputed from 48 whole training series differ from the carried ones by 20-45 % (mean relative
difference per layer) and move the 32 validation series' slice AUC from 0.906 to 0.934 (subject
0.995 -> 1.000, Dice 0.696 -> 0.704), but on the 128 validation series of the operating points
and on the test split the candidate is worse on almost every figure (test subject AUC 0.989 ->
0.983, median volume error 1.17 -> 1.49 mL; docs/results.md, "BatchNorm statistics of whole
series"): so it is a tool for measuring, not a step of the shipping chain. This is what ``torch.optim.swa_utils.update_bn`` does after weight averaging (Izmailov et al.
2018), over this project's batches (series of different lengths, :func:`training.step.forward_batch`).
The weights themselves are unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.checkpoint import BATCHNORM_FROM, derived_checkpoint, load_checkpoint, trained_weights
from training.config import TrainConfig
from training.data.build import build_split
from training.data.dataset import CaseDataset, ModelSample
from training.data.splits import Split
from training.networks import build_network, grid_of
from training.step import forward_batch

logger = logging.getLogger(__name__)


def recalibrate_batchnorm(
    model: nn.Module, samples: Iterable[ModelSample], device: torch.device
) -> int:
    """Replace the running statistics of every BatchNorm layer of ``model`` by the plain mean
    over ``samples`` (one series per forward pass, float32, no gradient); returns their number.

    Raises
    ------
    ValueError
        ``model`` has no BatchNorm layer, or ``samples`` is empty (the statistics would be reset
        to mean 0, variance 1).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("the model has no BatchNorm layer to recalibrate")
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the passes
    was_training = model.training
    model.train()
    count = 0
    try:
        with torch.no_grad():
            for sample in samples:
                forward_batch(model, [sample], device)
                count += 1
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    if count == 0:
        raise ValueError("no series to recompute the BatchNorm statistics from")
    return count


def recalibrated_checkpoint(checkpoint: Path, cases: int, device: torch.device) -> dict[str, Any]:
    """Checkpoint ``checkpoint``'s trained weights with BatchNorm statistics recomputed on
    ``cases`` whole training series spread evenly over the train split (no augmentation; from
    the prepared-case cache where the config keeps one), as a :func:`derived_checkpoint`."""
    payload = load_checkpoint(checkpoint)
    config = TrainConfig.model_validate(payload["config"])
    model = build_network(config.model)
    model.load_state_dict(trained_weights(payload))
    data = config.data
    dataset = CaseDataset(
        build_split(config, Split.TRAIN),
        grid_of(model),
        prepared_dir=data.cache_dir / "prepared" if data.cache_prepared else None,
    )
    if not 0 < cases <= len(dataset):
        raise ValueError(f"--cases must be in 1..{len(dataset)} (the train split), got {cases}")
    indices = [index * len(dataset) // cases for index in range(cases)]
    model.to(device)
    count = recalibrate_batchnorm(
        model, (dataset.sample(index, crop=False) for index in indices), device
    )
    logger.info("BatchNorm statistics of %s recomputed over %d training series", checkpoint, count)
    weights = {key: value.cpu() for key, value in model.state_dict().items()}
    return derived_checkpoint(
        payload,
        weights,
        {BATCHNORM_FROM: {"checkpoint": str(checkpoint), "split": "train", "series": count}},
    )
