"""The training loop: epochs of Adam steps, validation, checkpoints, logs, curves.

Life cycle (nnU-Net style hooks): :meth:`Trainer.fit` runs :meth:`train_epoch`, then
:meth:`validate` every ``validation.every_epochs``, then :meth:`save_checkpoint` (``last.pt``
every epoch, ``best.pt`` when the raw validation loss improves) and redraws the curves.

Determinism: the global RNGs are seeded from ``config.seed``; the order of training cases in
epoch ``e`` and every random crop / transform are drawn from generators seeded by ``(seed, e)``
and ``(seed, e, case)``, independent of worker processes and of resuming.

Exact resume: ``last.pt`` records the epoch, the batches already done inside it, the model,
loss weights, optimiser, scaler and RNG states. It is written at every epoch end, every
``checkpoint.every_minutes`` inside an epoch, when a time box (``max_minutes``) or step budget
(``max_steps``) ends the process, and on SIGTERM/SIGINT. A resumed run skips the batches already
done and continues with the same cases, crops and transforms it would have drawn without the
stop, so training over many sessions (or a GPU loan of a few minutes) adds up to one run.
Under ``torchrun`` every rank trains on its micro-batches of each global batch
(:mod:`training.sampling`, :mod:`training.distributed`), rank 0 alone logs and checkpoints.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import yaml
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ichnet_core.imaging.model_grid import ModelGrid
from training.checkpoint import (
    CheckpointError,
    capture_rng,
    check_resumable,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    trained_weights,
    warm_start,
)
from training.config import TrainConfig, config_hash
from training.data.build import build_split
from training.data.dataset import collate_samples, prepare_all
from training.data.splits import Split
from training.device import autocast_dtype, resolve_device, seed_everything, use_channels_last
from training.distributed import Distributed, StepObjective, accumulate, groups
from training.evaluate import EvalResult, evaluate_model, total_loss
from training.losses import Term, UncertaintyWeighting
from training.networks import build_network, grid_of
from training.plots import plot_curves
from training.real_ct import read_normal_series, worst_normal_figures
from training.runlog import RunLog
from training.sampling import EpochDataset, EpochSampler
from training.transforms import AugmentSettings

logger = logging.getLogger(__name__)

LAST_CHECKPOINT: Final[str] = "last.pt"
BEST_CHECKPOINT: Final[str] = "best.pt"
#: Files and folders of a run (moved aside when a run starts afresh in the same folder).
_RUN_FILES: Final[tuple[str, ...]] = (
    "checkpoints",
    "steps.csv",
    "metrics.csv",
    "config.yaml",
    "curves_loss.png",
    "curves_validation.png",
    "tensorboard",
)


@dataclass
class TrainSummary:
    """What a finished (or stopped) run reports."""

    output_dir: Path
    epochs_completed: int
    steps: int
    best_val_loss: float | None
    last_checkpoint: Path
    best_checkpoint: Path | None
    mean_step_time_s: float | None
    mean_data_time_s: float | None


class Trainer:
    """Train the network of ``config``; resumes from ``output_dir/checkpoints/last.pt``.

    Parameters
    ----------
    config:
        The run.
    resume:
        Continue from the last checkpoint when one exists (its config hash must match).
    max_steps:
        Stop after this many optimiser steps in this process (timing, smoke tests, time-boxed
        runs); ``last.pt`` then records how far the epoch got and a resume continues there.
    max_minutes:
        Stop (with ``last.pt``) once this much wall time has passed since the start of
        :meth:`fit` (a session's end, a GPU loan).
    init_from:
        A committed checkpoint to resume from when ``output_dir`` holds none, or an older one
        (fewer steps); it is copied to ``output_dir/checkpoints/last.pt`` first.
    warm_start:
        For a new run only (ignored when ``output_dir`` holds a run to resume): start from the
        network weights of this checkpoint (its moving average when it kept one) wherever
        names and shapes match, so a changed architecture or setting does not throw away the
        CPU-hours already spent, and its learned loss weights; the optimiser and the step count
        start afresh. The checkpoint and its step are recorded in every checkpoint of the run.
    distributed:
        This process's rank under torchrun (:mod:`training.distributed`); rank 0 alone logs,
        validates and writes checkpoints, every rank trains on its share of each global batch.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool = True,
        max_steps: int | None = None,
        max_minutes: float | None = None,
        init_from: Path | None = None,
        warm_start: Path | None = None,
        distributed: Distributed | None = None,
    ) -> None:
        self.config = config
        self.dist = distributed or Distributed()
        self.hash = config_hash(config)
        self.output_dir = Path(config.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.max_steps = max_steps
        self.max_minutes = max_minutes
        self.stop_requested = False
        self.device = resolve_device(config.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if config.cpu_threads is not None:
            torch.set_num_threads(config.cpu_threads)
        seed_everything(config.seed, config.deterministic)
        self.model = build_network(config.model).to(self.device)
        if self.device.type == "cpu" and config.optim.cpu_channels_last:
            use_channels_last(self.model)
        self.grid = grid_of(self.model)
        self.weighting = UncertaintyWeighting(config.loss.uncertainty_weighting).to(self.device)
        optim = config.optim
        groups: list[dict[str, Any]] = [
            {"params": list(self.model.parameters()), "weight_decay": optim.weight_decay}
        ]
        if config.loss.uncertainty_weighting:
            groups.append(
                {
                    "params": list(self.weighting.parameters()),
                    "lr": optim.uncertainty_lr or optim.lr,
                    "weight_decay": 0.0,
                }
            )
        self.optimizer = torch.optim.Adam(groups, lr=optim.lr)
        self.amp_dtype = autocast_dtype(optim.amp, self.device, cpu_bf16=optim.cpu_bf16)
        #: Validation's autocast: never bfloat16 on a CPU, whatever the training step uses.
        self.eval_dtype = autocast_dtype(optim.amp, self.device)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.epoch = 0
        self.step = 0
        self.best_val_loss: float | None = None
        self.batches_in_epoch = 0
        self.step_times: list[float] = []
        self.data_times: list[float] = []
        self.warm_started_from: dict[str, Any] | None = None
        if resume and init_from is not None and self.dist.is_main:
            self._adopt(Path(init_from))
        self._ema_state: dict[str, Any] | None = None
        self.dist.barrier()  # the other ranks read last.pt only once rank 0 has adopted it
        if resume and (self.checkpoint_dir / LAST_CHECKPOINT).is_file():
            self.load(self.checkpoint_dir / LAST_CHECKPOINT)
        else:
            if self.dist.is_main:
                self._set_aside_previous_run()
            if warm_start is not None:
                self._warm_start(Path(warm_start))
        self.ema = self._moving_average(optim.ema_decay)
        objective = StepObjective(self.model, self.weighting, config.loss, self.amp_dtype)
        self.objective = self.dist.wrap(objective, touch_all=True)
        self.train_source = build_split(config, Split.TRAIN)
        self.val_source = build_split(config, Split.VAL)
        self.real_normal = read_normal_series(config.validation.real_normal_series)
        if len(self.train_source) == 0:
            raise ValueError("no training cases: check data.synthetic and data.datasets")
        augment = None
        if config.augment.enabled:
            a = config.augment
            augment = AugmentSettings(
                a.rotation_deg, a.shear, a.zoom, a.shift_px, a.flip_lr, a.flip_ud
            )
        data = config.data
        self.train_set = EpochDataset(
            self.train_source,
            self.grid,
            slices_per_sample=data.slices_per_sample,
            augment=augment,
            seed=config.seed,
            cache_in_memory=data.cache_in_memory,
            lesion_run_fraction=data.lesion_run_fraction,
            crop_size=data.crop_size,
            prepared_dir=data.cache_dir / "prepared" if data.cache_prepared else None,
        )
        if data.prepare_workers and self.train_set.prepared_dir is not None:
            started = time.perf_counter()
            indices = self.dist.shard(len(self.train_set))
            counts = prepare_all(self.train_set, data.prepare_workers, indices)
            logger.info(
                "training cases: %d prepared, %d already cached (%d workers, %.0f s)",
                counts["prepared"],
                counts["cached"],
                data.prepare_workers,
                time.perf_counter() - started,
            )
            self.dist.barrier()
        self.sampler = EpochSampler(
            len(self.train_set),
            config.seed,
            optim.batch_size,
            data.whole_slice_fraction,
            micro_batch_size=optim.micro_batch_size,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.loader = DataLoader(
            self.train_set,
            batch_size=self.sampler.micro_batch_size,
            sampler=self.sampler,
            collate_fn=collate_samples,
            num_workers=config.data.num_workers,
            persistent_workers=config.data.num_workers > 0,
            pin_memory=self.device.type == "cuda",
        )
        self.log: RunLog | None = None
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(
                yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
            )
            self.log = RunLog(self.output_dir, tensorboard=config.logging.tensorboard == "auto")
        logger.info(
            "training %s on %s x %d (%d parameters, input %d px at %s mm, amp %s), %d train /"
            " %d val cases",
            config.model.name,
            self.device,
            self.dist.world_size,
            sum(p.numel() for p in self.model.parameters()),
            self.grid.input_size,
            self.grid.spacing_mm or "field-of-view",
            self.amp_dtype,
            len(self.train_source),
            len(self.val_source),
        )

    def _adopt(self, path: Path) -> None:
        """Copy checkpoint ``path`` to ``last.pt`` unless the run folder already has a newer one."""
        if not path.is_file():
            raise CheckpointError(f"--init-from {path}: no such checkpoint")
        last = self.checkpoint_dir / LAST_CHECKPOINT
        if last.is_file() and int(load_checkpoint(last)["step"]) >= int(
            load_checkpoint(path)["step"]
        ):
            logger.info("%s is at least as far as %s; resuming it", last, path)
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(last, {k: v for k, v in load_checkpoint(path).items() if k != "format"})
        logger.info("resuming from the committed checkpoint %s", path)

    def _warm_start(self, path: Path) -> None:
        """Take the matching network weights of checkpoint ``path`` (see the class docstring)."""
        step, new = warm_start(self.model, path, self.weighting)
        self.warm_started_from = {"checkpoint": str(path), "step": step}
        logger.info("warm start from %s (step %d); new: %s", path, step, ", ".join(new) or "none")

    def _moving_average(self, decay: float | None) -> AveragedModel | None:
        """The weights' moving average, restored from the checkpoint when it kept one.

        Started from the current weights otherwise (a new run, or a run that switches it on).
        """
        if decay is None:
            return None
        ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        if self._ema_state is not None:
            ema.load_state_dict(self._ema_state)
        else:
            logger.info(
                "moving average of the weights (decay %g) starts at step %d", decay, self.step
            )
        return ema

    @property
    def judged_model(self) -> torch.nn.Module:
        """The network validation judges: the moving average when the run keeps one."""
        return self.ema.module if self.ema is not None else self.model

    def _set_aside_previous_run(self) -> None:
        """Move an earlier run's files to ``previous-<time>/``: neither appended to nor deleted."""
        if not self.output_dir.is_dir():
            return
        leftovers = [
            self.output_dir / name for name in _RUN_FILES if (self.output_dir / name).exists()
        ]
        if not leftovers:
            return
        target = self.output_dir / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
        target.mkdir()
        for path in leftovers:
            path.rename(target / path.name)
        logger.warning("starting afresh: the earlier run's files were moved to %s", target)

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """The resumable state of the run."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "batches_in_epoch": self.batches_in_epoch,
            "best_val_loss": self.best_val_loss,
            "config_hash": self.hash,
            "config": self.config.model_dump(mode="json"),
            "model_name": self.config.model.name,
            "model_overrides": dict(self.config.model.overrides),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "loss_weighting": self.weighting.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng(),
            "torch_version": str(torch.__version__),
            "warm_start": self.warm_started_from,
        }

    def save_checkpoint(self, name: str) -> Path:
        """Write ``name`` (rank 0 only: every rank holds the same state after each step)."""
        path = self.checkpoint_dir / name
        if not self.dist.is_main:
            return path
        save_checkpoint(path, self.state())
        logger.info("saved checkpoint %s (epoch %d, step %d)", path, self.epoch, self.step)
        return path

    def load(self, path: Path) -> None:
        """Restore a run saved by :meth:`save_checkpoint` (same config hash required)."""
        payload = load_checkpoint(path)
        check_resumable(path, payload)
        self._ema_state = payload.get("ema")
        if payload["config_hash"] != self.hash:
            raise CheckpointError(
                f"{path} was written with config hash {payload['config_hash'][:12]}, this config "
                f"hashes to {self.hash[:12]}: the settings changed; use a new output_dir or "
                "restore the settings (epochs, workers and logging may change)"
            )
        self.model.load_state_dict(payload["model"])
        self.weighting.load_state_dict(payload["loss_weighting"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        restore_rng(payload["rng"])
        self.epoch = int(payload["epoch"])
        self.step = int(payload["step"])
        self.batches_in_epoch = int(payload.get("batches_in_epoch", 0))
        self.best_val_loss = payload["best_val_loss"]
        self.warm_started_from = payload.get("warm_start")
        logger.info(
            "resumed %s at epoch %d (+%d batches), step %d",
            path,
            self.epoch,
            self.batches_in_epoch,
            self.step,
        )

    # ------------------------------------------------------------------ loop

    def _steps_left(self, done_here: int) -> bool:
        """False once the step budget or time box is used up or a stop was requested (any rank)."""
        stop = self.stop_requested or (
            self.max_minutes is not None
            and time.perf_counter() - self._fit_started > 60.0 * self.max_minutes
        )
        if self.dist.any_rank(stop):
            return False
        return self.max_steps is None or done_here < self.max_steps

    def _request_stop(self, signum: int, _frame: object) -> None:
        logger.warning("signal %d: stopping after this step with a checkpoint", signum)
        self.stop_requested = True

    def train_epoch(self, done_here: int) -> tuple[dict[str, float], int, bool]:
        """One pass over the training cases; returns mean losses, steps done, completed?

        A step runs this rank's micro-batches of one global batch (one, without micro-batches
        and ranks), each loss divided by their number; DDP then averages over the ranks, so the
        gradient is the mean over all micro-batches of the global batch.
        """
        self.model.train()
        self.sampler.set_epoch(
            self.epoch, skip=self.batches_in_epoch * self.config.optim.batch_size
        )
        every = self.config.checkpoint.every_minutes
        saved_at = time.perf_counter()
        sums: dict[str, list[float]] = {}
        completed = True
        progress = tqdm(
            self.loader,
            desc=f"epoch {self.epoch + 1}/{self.config.optim.epochs}",
            disable=not (self.config.logging.progress_bar and self.dist.is_main),
            leave=False,
        )
        waited_since = time.perf_counter()
        for group in groups(iter(progress), self.sampler.micro_batches_per_step):
            if not self._steps_left(done_here):
                completed = False
                break
            started = time.perf_counter()
            data_time = started - waited_since
            self.data_times.append(data_time)
            self.batches_in_epoch += 1  # counted before any skip, so a resume skips it too
            self.optimizer.zero_grad(set_to_none=True)
            values = accumulate(self.objective, group, self.device, self.scaler, self.dist)
            if not values:
                logger.warning(
                    "batch %s has no usable labels; skipped",
                    [s.case_id for samples in group for s in samples],
                )
                continue
            if self.config.optim.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            elapsed = time.perf_counter() - started
            self.step_times.append(elapsed)
            self.step += 1
            done_here += 1
            for key, value in values.items():
                sums.setdefault(key, []).append(value)
            progress.set_postfix(loss=f"{values['loss']:.4f}")
            if self.log is not None and (
                self.step % self.config.logging.log_every_steps == 0 or self.step == 1
            ):
                self.log.step(
                    {
                        "step": self.step,
                        "epoch": self.epoch + 1,
                        **values,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "step_time_s": elapsed,
                        "data_time_s": data_time,
                    }
                )
            if every is not None and time.perf_counter() - saved_at > 60.0 * every:
                self.save_checkpoint(LAST_CHECKPOINT)
                saved_at = time.perf_counter()
            waited_since = time.perf_counter()
        means = {key: float(np.mean(values)) for key, values in sums.items()}
        return means, done_here, completed

    def validate(self) -> EvalResult | None:
        """Evaluate on the validation split (whole series, no augmentation; rank 0 only)."""
        if len(self.val_source) == 0 or not self.dist.is_main:
            return None
        return evaluate_model(
            self.judged_model,
            self.val_source,
            self.grid,
            self.device,
            threshold=self.config.validation.threshold,
            autocast_dtype=self.eval_dtype,
            progress=self.config.logging.progress_bar,
            description="validation",
        )

    def check_real_normal(self) -> dict[str, float]:
        """:func:`training.real_ct.worst_normal_figures` (rank 0 only, like validation)."""
        if not self.dist.is_main:
            return {}
        return worst_normal_figures(self.judged_model, self.grid, self.real_normal)

    def _epoch_row(
        self, train: dict[str, float], result: EvalResult | None, seconds: float, steps: int
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "train_loss": train.get("loss"),
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": seconds,
            "mean_step_time_s": float(np.mean(self.step_times[-steps:])) if steps else None,
        }
        for term in Term:
            row[f"train_loss_{term.value}"] = train.get(f"loss_{term.value}")
        for term, weight in self.weighting.weights().items():
            row[f"weight_{term.value}"] = weight
        if result is not None:
            row["val_loss"] = total_loss(result.loss)
            for term in Term:
                row[f"val_loss_{term.value}"] = result.loss.get(term.value)
            subject, slices = result.table2["subject"]["any"], result.table2["slice"]["any"]
            row["val_subject_auc_any"] = subject.auc if subject else None
            row["val_subject_f1_any"] = subject.f1 if subject else None
            row["val_slice_auc_any"] = slices.auc if slices else None
            row["val_dice_hemorrhage"] = result.table3["hemorrhage"]["dice"]
            row["val_dice_mean"] = result.table3["mean"]["dice"]
            row.update(self.check_real_normal())
        return row

    def fit(self) -> TrainSummary:
        """Train until ``optim.epochs`` epochs are complete, or a budget, time box or signal ends it."""
        done_here = 0
        best_path = self.checkpoint_dir / BEST_CHECKPOINT
        last_path = self.checkpoint_dir / LAST_CHECKPOINT
        self._fit_started = time.perf_counter()
        previous = {
            sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            while self.epoch < self.config.optim.epochs and self._steps_left(done_here):
                started = time.perf_counter()
                before = done_here
                train, done_here, completed = self.train_epoch(done_here)
                if not completed:
                    logger.info(
                        "stopped after %d steps in this process, %d batches into epoch %d",
                        done_here,
                        self.batches_in_epoch,
                        self.epoch + 1,
                    )
                    last_path = self.save_checkpoint(LAST_CHECKPOINT)
                    break
                self.epoch += 1
                self.batches_in_epoch = 0
                result = None
                if self.epoch % self.config.validation.every_epochs == 0 or (
                    self.epoch == self.config.optim.epochs
                ):
                    result = self.validate()
                row = self._epoch_row(
                    train, result, time.perf_counter() - started, done_here - before
                )
                if self.log is not None:
                    self.log.epoch(row)
                val_loss = row.get("val_loss")
                if val_loss is not None and (
                    self.best_val_loss is None or val_loss < self.best_val_loss
                ):
                    self.best_val_loss = float(val_loss)
                    self.save_checkpoint(BEST_CHECKPOINT)
                last_path = self.save_checkpoint(LAST_CHECKPOINT)
                if self.dist.is_main:
                    plot_curves(self.output_dir)
                logger.info(
                    "epoch %d: train loss %s, val loss %s",
                    self.epoch,
                    f"{row['train_loss']:.4f}" if row["train_loss"] is not None else "n/a",
                    f"{val_loss:.4f}" if val_loss is not None else "n/a",
                )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.log is not None:
                self.log.close()
        self.dist.barrier()  # no rank leaves before rank 0 has written the last checkpoint
        return TrainSummary(
            output_dir=self.output_dir,
            epochs_completed=self.epoch,
            steps=self.step,
            best_val_loss=self.best_val_loss,
            last_checkpoint=last_path,
            best_checkpoint=best_path if best_path.is_file() else None,
            mean_step_time_s=float(np.mean(self.step_times)) if self.step_times else None,
            mean_data_time_s=float(np.mean(self.data_times)) if self.data_times else None,
        )


def load_trained_model(
    checkpoint: Path, device: torch.device
) -> tuple[torch.nn.Module, ModelGrid, TrainConfig]:
    """The network of a training checkpoint (eval mode) with its input grid and config."""
    payload = load_checkpoint(checkpoint)
    config = TrainConfig.model_validate(payload["config"])
    model = build_network(config.model)
    model.load_state_dict(trained_weights(payload))
    return model.to(device).eval(), grid_of(model), config
