"""Data-parallel training: torchrun with gloo on 2 CPU ranks equals one process, and resumes on 1."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from training.checkpoint import load_checkpoint
from training.config import (
    LossSection,
    ModelSection,
    TrainConfig,
    config_hash,
    load_config,
    parse_config,
)
from training.data.case import LabelledCase, SegKind
from training.data.dataset import make_sample, prepare_case
from training.distributed import StepObjective
from training.losses import Term, UncertaintyWeighting
from training.networks import build_network, grid_of
from training.sampling import EpochSampler
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
#: Batch-norm statistics are buffers, not parameters; under DDP they are rank 0's.
BATCH_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _config_data(tmp_path: Path, tiny_overrides: dict[str, Any]) -> dict[str, Any]:
    """Four 64x64 synthetic training cases, global batch 2 in micro-batches of 1: 2 steps/epoch."""
    return {
        "seed": 5,
        "output_dir": str(tmp_path / "single"),
        "device": "cpu",
        "cpu_threads": 1,
        "model": {"name": "ichnet", "overrides": {**tiny_overrides, "compartments": True}},
        "data": {
            "slices_per_sample": 4,
            "cache_dir": str(tmp_path / "cache"),
            "crop_size": 24,
            "whole_slice_fraction": 0.5,
            "synthetic": {
                "train_cases": 4,
                "val_cases": 0,
                "test_cases": 0,
                "generator": {"rows": 64, "columns": 64},
            },
        },
        "augment": {"shift_px": 2},
        "optim": {"lr": 1e-3, "batch_size": 2, "micro_batch_size": 1, "epochs": 1},
        "logging": {"log_every_steps": 1, "progress_bar": False, "tensorboard": "off"},
    }


def _torchrun(config_file: Path, output_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "training.cli",
        "train",
        "--config",
        str(config_file),
        "--output-dir",
        str(output_dir),
        *extra,
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _assert_same_parameters(a: Path, b: Path) -> None:
    """Parameters (not batch-norm running statistics: DDP keeps rank 0's) agree."""
    model_a, model_b = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    names = [name for name in model_a if not name.endswith(BATCH_NORM_BUFFERS)]
    assert names and set(model_a) == set(model_b)
    for name in names:
        torch.testing.assert_close(model_a[name], model_b[name], rtol=1e-5, atol=1e-6, msg=name)
    weights_a = load_checkpoint(a)["loss_weighting"]["log_variances"]
    torch.testing.assert_close(weights_a, load_checkpoint(b)["loss_weighting"]["log_variances"])


def test_torchrun_two_ranks_equal_one_process_and_resume_on_one(
    tmp_path: Path, tiny_overrides: dict[str, Any]
) -> None:
    data = _config_data(tmp_path, tiny_overrides)
    config = parse_config(data)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(data), encoding="utf-8")

    # One process, micro-batches accumulated: step 1 (kept aside), then step 2.
    Trainer(config, max_steps=1).fit()
    single = tmp_path / "single" / "checkpoints"
    shutil.copy(single / "last.pt", tmp_path / "single_step1.pt")
    Trainer(config).fit()

    # Two gloo ranks, one micro-batch each, DDP averaging: one step, then stop.
    ranks = tmp_path / "ranks"
    run = _torchrun(config_file, ranks, "--max-steps", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    two_rank = load_checkpoint(ranks / "checkpoints" / "last.pt")
    assert (two_rank["step"], two_rank["batches_in_epoch"]) == (1, 1)
    _assert_same_parameters(tmp_path / "single_step1.pt", ranks / "checkpoints" / "last.pt")
    # Rank 0 alone logged and wrote: one row per step, one summary on stdout.
    assert (ranks / "steps.csv").read_text().count("\n") == 2
    assert run.stdout.count('"steps": 1') == 1

    # The 2-rank checkpoint resumes in one process and ends where the single run ended.
    resumed = Trainer(config.model_copy(update={"output_dir": ranks}))
    assert (resumed.step, resumed.batches_in_epoch) == (1, 1)
    summary = resumed.fit()
    assert summary.steps == 2 and summary.epochs_completed == 1
    _assert_same_parameters(single / "last.pt", ranks / "checkpoints" / "last.pt")


def test_sampler_shares_each_global_batch_between_ranks() -> None:
    one = EpochSampler(11, seed=2, batch_size=4, whole_slice_fraction=0.5, micro_batch_size=1)
    ranks = [
        EpochSampler(11, seed=2, batch_size=4, micro_batch_size=1, rank=r, world_size=2)
        for r in (0, 1)
    ]
    for sampler in (one, *ranks):
        sampler.set_epoch(1, skip=4)
    order = [index for _, index, _ in one]
    assert len(order) == 4  # positions 4-7; the incomplete last batch (8-10) is left out
    shares = [[index for _, index, _ in sampler] for sampler in ranks]
    assert shares[0] == [order[0], order[2]] and shares[1] == [order[1], order[3]]
    assert [len(sampler) for sampler in ranks] == [2, 2]
    assert ranks[0].micro_batches_per_step == 2
    with pytest.raises(ValueError, match="multiple of the number of ranks"):
        EpochSampler(8, seed=0, batch_size=2, world_size=2)


def test_committed_checkpoint_keeps_its_config_hash() -> None:
    """micro_batch_size (unset) does not enter the hash: the running cpu_diag run resumes."""
    checkpoint = ROOT / "training" / "checkpoints" / "cpu_diag.pt"
    config: TrainConfig = load_config(ROOT / "training" / "configs" / "cpu_diag.yaml")
    assert load_checkpoint(checkpoint)["config_hash"] == config_hash(config)
    micro = config.optim.model_copy(update={"micro_batch_size": 1})
    assert config_hash(config.model_copy(update={"optim": micro})) != config_hash(config)


def test_every_parameter_gets_a_gradient_when_a_micro_batch_lacks_labels(
    phantom_case: LabelledCase, tiny_overrides: dict[str, Any]
) -> None:
    """Under DDP each rank must send a gradient for every parameter, also when its micro-batch
    has no label for a head (an RSNA series has no outline); ``touch_all`` sends zeros there and
    changes nothing where there are labels."""
    model = build_network(ModelSection(name="ichnet", overrides=tiny_overrides))
    weighting = UncertaintyWeighting()
    unlabelled = dataclasses.replace(phantom_case, seg=None, seg_kind=SegKind.NONE)
    samples = [make_sample(prepare_case(unlabelled, grid_of(model)))]
    grads = {}
    for touch_all in (False, True):
        objective = StepObjective(model, weighting, LossSection(), None, touch_all=touch_all)
        model.zero_grad(set_to_none=True)
        weighting.zero_grad(set_to_none=True)
        loss, terms = objective(samples, torch.device("cpu"))
        assert Term.SEG not in terms
        loss.backward()
        grads[touch_all] = {n: p.grad for n, p in objective.named_parameters()}
    assert any(g is None for g in grads[False].values())  # the decoder got no gradient
    assert all(g is not None for g in grads[True].values())
    for name, grad in grads[False].items():
        expected = torch.zeros_like(grads[True][name]) if grad is None else grad
        torch.testing.assert_close(grads[True][name], expected, rtol=0, atol=0)
