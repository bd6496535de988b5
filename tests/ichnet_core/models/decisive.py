"""Random weights that behave like trained ones: for parity tests and benchmarks, not the node.

A fresh ICHNet outputs nearly uniform class probabilities (standard deviation about 0.01), so
any arithmetic error vanishes after the softmax and an engine parity check would pass at any
precision. Random batch-norm statistics and larger output heads spread the probabilities over
[0, 1] like a trained model's. Used by the test suite (tests/ichnet_core/inference/tiny.py,
tests/dicom_node/test_workflow_results.py) and the benchmarks (bench/bench_weights.py).
"""

from __future__ import annotations

from typing import Final

import torch

from ichnet_core.models.ichnet import ICHNet

#: Output-head gains of :func:`spread_outputs` (segmentation, classification).
SPREAD_SEG_HEAD_GAIN: Final[float] = 40.0
SPREAD_CLS_HEAD_GAIN: Final[float] = 20.0


def spread_outputs(model: ICHNet) -> None:
    """Give a randomly initialised network a trained-like output range, in place."""
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            norm.running_mean.uniform_(-0.2, 0.2)
            norm.running_var.uniform_(0.5, 2.0)
        heads = [(model.decoder.head.classifier, SPREAD_SEG_HEAD_GAIN)]
        heads += [(model.classifier.slice_fc, SPREAD_CLS_HEAD_GAIN)]
        heads += [(model.classifier.subject_fc, SPREAD_CLS_HEAD_GAIN)]
        for layer, gain in heads:
            layer.weight.mul_(gain)
            layer.bias.mul_(gain)
