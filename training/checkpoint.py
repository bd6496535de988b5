"""Training checkpoints: everything needed to resume a run exactly, loadable without pickle code.

A checkpoint holds the model, loss weights, optimiser and AMP-scaler state, the completed epoch
and step, the config (and its hash), the RNG states and, when ``optim.ema_decay`` is set, the
moving average of the weights (``ema``), which is what the run is judged and shipped by. RNG states are converted to tensors and
plain numbers so that ``torch.load(weights_only=True)`` reads them: opening a checkpoint never
runs code from the file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from ichnet_core.durable import write_atomic
from ichnet_core.models.layers.blocks import ResidualBlock

CHECKPOINT_FORMAT: Final[str] = "ichnet-train-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run; the message says why."""


def capture_rng() -> dict[str, Any]:
    """Python, numpy (legacy global), torch CPU and CUDA generator states as tensors."""
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    captured: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(state, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        captured["cuda"] = torch.cuda.get_rng_state_all()
    return captured


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    python = state["python"]
    random.setstate(
        (python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"])
    )
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format tag) durably and atomically (``ichnet_core.durable``)."""
    write_atomic(path, lambda handle: torch.save({"format": CHECKPOINT_FORMAT, **payload}, handle))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU.

    Raises
    ------
    CheckpointError
        Unreadable file or not a training checkpoint of this format.
    """
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (found {found!r})")
    return payload


#: Prefix of the network's keys in the state of ``torch.optim.swa_utils.AveragedModel``.
_AVERAGED_PREFIX: Final[str] = "module."


def trained_weights(payload: dict[str, Any]) -> dict[str, Any]:
    """The network weights a checkpoint is evaluated and exported with.

    The moving average (``ema``) when the run keeps one, else the trained weights (``model``):
    evaluation, operating points and export must all judge the same network.
    """
    ema = payload.get("ema")
    if ema is None:
        return payload["model"]
    return {
        key.removeprefix(_AVERAGED_PREFIX): value
        for key, value in ema.items()
        if key.startswith(_AVERAGED_PREFIX)
    }


def _start_new_residual_blocks_as_identity(model: torch.nn.Module, taken: set[str]) -> None:
    """Zero the last BatchNorm scale and shift of every identity-shortcut residual block none of
    whose tensors came from the checkpoint: ``relu(0 + x) = x`` for its (non-negative) input."""
    for name, module in model.named_modules():
        if not isinstance(module, ResidualBlock) or not isinstance(
            module.shortcut, torch.nn.Identity
        ):
            continue
        keys = {f"{name}.{key}" for key in module.state_dict()}
        if keys.isdisjoint(taken) and isinstance(module.bn2, torch.nn.BatchNorm2d):
            torch.nn.init.zeros_(module.bn2.weight)
            torch.nn.init.zeros_(module.bn2.bias)


def warm_start(
    model: torch.nn.Module, path: Path, weighting: torch.nn.Module | None = None
) -> tuple[int, list[str]]:
    """Load the trained weights of checkpoint ``path`` into ``model`` where names and shapes match,
    and its learned loss weights into ``weighting`` when they have the same shape.

    Why: a change of architecture or of a hashed setting (e.g. a lower learning rate once the
    curves have flattened) starts a new run, and on this project's CPUs a run costs many hours;
    the layers that did not change keep what they learned, and the loss balance the run had
    found is not thrown back to equal weights. A residual block that is new as a whole (a deeper
    encoder, e.g. ``blocks_per_level`` 1 -> 2) starts as the identity (its last BatchNorm scale
    zero, as in Goyal et al. 2017): the deeper network then computes exactly what the trained
    one did and adds capacity from there, instead of first losing what the run had learned.
    Returns the checkpoint's step and the names of ``model``'s tensors left as they were (new or
    reshaped).
    """
    if not path.is_file():
        raise CheckpointError(f"--warm-start {path}: no such checkpoint")
    payload = load_checkpoint(path)
    own = model.state_dict()
    taken = {
        key: value
        for key, value in trained_weights(payload).items()
        if key in own and own[key].shape == value.shape
    }
    if not taken:
        raise CheckpointError(f"--warm-start {path}: no weight matches this network")
    model.load_state_dict(taken, strict=False)
    _start_new_residual_blocks_as_identity(model, set(taken))
    if weighting is not None:
        learned = payload.get("loss_weighting", {})
        current = weighting.state_dict()
        if set(learned) == set(current) and all(
            learned[k].shape == current[k].shape for k in current
        ):
            weighting.load_state_dict(learned)
    return int(payload["step"]), sorted(set(own) - set(taken))


#: Key under which an averaged checkpoint names the checkpoints it was averaged from.
AVERAGED_FROM: Final[str] = "averaged_from"
#: Key under which a checkpoint says its BatchNorm statistics were recomputed
#: (``training.recalibrate``).
BATCHNORM_FROM: Final[str] = "batchnorm_recalibrated"
#: Keys of a checkpoint made from others: no optimiser or RNG state, so never resumed.
DERIVED_KEYS: Final[tuple[str, ...]] = (AVERAGED_FROM, BATCHNORM_FROM)


def check_resumable(path: Path, payload: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` when checkpoint ``payload`` (read from ``path``) was made
    from others (:data:`DERIVED_KEYS`): it has no optimiser or RNG state to resume."""
    if any(key in payload for key in DERIVED_KEYS):
        raise CheckpointError(
            f"{path} was made from other checkpoints (ichnet-train average or recalibrate-bn) "
            "and holds no optimiser or RNG state: a run cannot resume from it; start one with "
            "--warm-start"
        )


def derived_checkpoint(
    source: dict[str, Any], weights: dict[str, Any], provenance: dict[str, Any]
) -> dict[str, Any]:
    """A checkpoint of network ``weights`` made from checkpoint ``source`` (average, BatchNorm
    recalibration) for evaluation, operating points and export: ``source``'s config, epoch, step
    and loss weights, the weights as ``model``, no moving average, optimiser or RNG state, and
    the provenance keys of ``source`` and ``provenance`` (:data:`DERIVED_KEYS`), which
    :meth:`Trainer.load` refuses and export records."""
    return {
        **{key: source[key] for key in ("epoch", "step", "config_hash", "config", "model_name")},
        "model_overrides": source.get("model_overrides"),
        "model": weights,
        "ema": None,
        "loss_weighting": source["loss_weighting"],
        "best_val_loss": source.get("best_val_loss"),
        "torch_version": str(torch.__version__),
        **{key: source[key] for key in DERIVED_KEYS if key in source},
        **provenance,
    }


def average_checkpoints(paths: list[Path]) -> dict[str, Any]:
    """The uniform mean of the trained weights (:func:`trained_weights`) of checkpoints of one run.

    Why: run 11's moving averages at steps a few thousand apart trade the headline figures
    against each other (one has the better slice AUC, a later one the better Dice) while the
    learning rate stays constant; the mean of several such snapshots of one basin (Izmailov et
    al. 2018, stochastic weight averaging) is a candidate that costs no training step (measured
    on run 11: one mean within the issue's volume error, another not; no reliable gain, see
    docs/results.md "Run 11"). BatchNorm running statistics are averaged like the weights (each
    snapshot's are the moving average of its own), integer buffers are the newest snapshot's.

    The result (:func:`derived_checkpoint`) carries the newest checkpoint's config, epoch and
    step and ``averaged_from`` (path and step of each).

    Raises
    ------
    CheckpointError
        Fewer than two checkpoints, or checkpoints of different configs (config hash).
    """
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two checkpoints, got {len(paths)}")
    payloads = sorted(
        (load_checkpoint(path) | {"path": str(path)} for path in paths),
        key=lambda payload: int(payload["step"]),
    )
    hashes = {payload["config_hash"] for payload in payloads}
    if len(hashes) != 1:
        found = ", ".join(f"{p['path']}: {p['config_hash'][:12]}" for p in payloads)
        raise CheckpointError(f"checkpoints of different configs cannot be averaged ({found})")
    states = [trained_weights(payload) for payload in payloads]
    newest = payloads[-1]
    averaged = {
        key: (
            torch.stack([state[key].float() for state in states]).mean(0).to(value.dtype)
            if value.is_floating_point()
            else value.clone()
        )
        for key, value in states[-1].items()
    }
    provenance = [{"path": p["path"], "step": int(p["step"])} for p in payloads]
    return derived_checkpoint(newest, averaged, {AVERAGED_FROM: provenance})
