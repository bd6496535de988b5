"""Training step on a CPU core: default layout vs channels-last (``optim.cpu_channels_last``).

    .venv/bin/python bench/train_step.py [--config training/configs/cpu_diag.yaml] \
        [--rounds 4] [--steps 3] [--write-docs]

One thread (= one core, as the long run trains): the config's network, one batch of the shape its
training step sees (``batch_size`` series x ``slices_per_sample`` slices x ``crop_size`` px),
forward, backward and an Adam step, under the config's autocast (``optim.cpu_bf16``). The loss is
a stand-in (mean squares of the outputs: the real terms cost a few ms of a step of about a
second). The two layouts run in alternating rounds, so a neighbour's load on the shared machine
falls on both; the table gives each layout's best and median seconds per step over the rounds.
It also prints how far each layout's float32 gradients are from a float64 reference (largest
relative L2 difference over the parameters): the channels-last step computes the same function
with its sums in another order, and this shows how much that moves the gradients.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from common import markdown_table, plain_table, section_text, update_docs
from torch import Tensor, nn

from ichnet_core.models.registry import create_model
from training.config import TrainConfig, load_config
from training.device import autocast_dtype, use_channels_last


def _loss(model: nn.Module, x: Tensor, dtype: torch.dtype | None) -> Tensor:
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        outputs = model(x)
        return sum(o.float().square().mean() for o in outputs if o is not None)  # type: ignore[return-value]


def _gradients(model: nn.Module, x: Tensor) -> list[Tensor]:
    model.zero_grad(set_to_none=True)
    _loss(model, x, None).backward()
    return [p.grad.detach().double() for p in model.parameters() if p.grad is not None]


def _worst_difference(a: list[Tensor], b: list[Tensor]) -> float:
    """Largest relative L2 difference over the parameters' gradients."""
    return max(float((u - v).norm() / v.norm().clamp_min(1e-30)) for u, v in zip(a, b, strict=True))


def _batch(config: TrainConfig) -> Tensor:
    size = config.data.crop_size or config.model.overrides.get("input_size", 256)
    shape = (config.optim.batch_size, config.data.slices_per_sample, 3, size, size)
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("training/configs/cpu_diag.yaml"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and layout")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = load_config(args.config)
    # the trainer's own choice: bfloat16 only where the CPU has AVX512_BF16/AMX
    dtype = autocast_dtype(config.optim.amp, torch.device("cpu"), cpu_bf16=config.optim.cpu_bf16)
    x = _batch(config)
    default = create_model(config.model.name, **config.model.overrides).train()
    reference = copy.deepcopy(default).double()
    channels_last = copy.deepcopy(default)
    use_channels_last(channels_last)
    exact = _gradients(reference, x.double())
    drift_default = _worst_difference(_gradients(default, x), exact)
    drift_channels_last = _worst_difference(_gradients(channels_last, x), exact)
    models = {"default (contiguous)": default, "channels-last": channels_last}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-6) for name, m in models.items()}

    def step(name: str) -> None:
        _loss(models[name], x, dtype).backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {name: [] for name in models}
    for name in models:
        step(name)  # warm-up: kernel selection, allocations
    for _ in range(args.rounds):
        for name in models:
            started = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            times[name].append((time.perf_counter() - started) / args.steps)
    base = statistics.median(times["default (contiguous)"])
    headers = ["layout", "best s/step", "median s/step", "steps per hour (median)", "vs default"]
    rows = [
        [
            name,
            f"{min(t):.3f}",
            f"{statistics.median(t):.3f}",
            f"{3600 / statistics.median(t):.0f}",
            f"{base / statistics.median(t):.2f}x",
        ]
        for name, t in times.items()
    ]
    shape = "x".join(str(d) for d in x.shape)
    notes = (
        f"Input {shape} ({args.config}), autocast {dtype or 'off'}, one thread, {args.rounds} "
        f"alternating rounds of {args.steps} steps. Float32 gradients against a float64 "
        f"reference, largest relative L2 difference over the parameters: default "
        f"{drift_default:.1e}, channels-last {drift_channels_last:.1e}."
    )
    print(plain_table(headers, rows))
    print(notes)
    if args.write_docs:
        body = markdown_table(headers, rows)
        update_docs("train_step", section_text("Training step on one CPU core", body, notes=notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
