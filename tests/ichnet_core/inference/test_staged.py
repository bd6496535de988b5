"""The shared staging: chunk boundaries, the skip budget and re-encoding, input checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import Tensor

from ichnet_core.inference.staged import NetworkOutput, run_staged
from ichnet_core.inference.torch_engine import TorchEngine
from ichnet_core.models.weights import ModelWeights


class CountingRunner:
    """The torch engine's real stage runner, with a record of what the driver asked it to do."""

    def __init__(self, engine: TorchEngine) -> None:
        self.inner = engine._runner
        self.encoded: list[int] = []
        self.recurred: list[int] = []
        self.decoded: list[tuple[int, int]] = []

    def encode(self, x: np.ndarray) -> tuple[Tensor, ...]:
        self.encoded.append(x.shape[0])
        return self.inner.encode(x)

    def recur(self, bottlenecks: Sequence[Tensor]) -> tuple[Tensor, np.ndarray, np.ndarray]:
        self.recurred.append(sum(b.shape[0] for b in bottlenecks))
        return self.inner.recur(bottlenecks)

    def decode(
        self, skips: tuple[Tensor, ...], seq_out: Tensor, start: int, stop: int
    ) -> np.ndarray:
        self.decoded.append((start, stop))
        return self.inner.decode(skips, seq_out, start, stop)

    def nbytes(self, features: tuple[Tensor, ...]) -> int:
        return self.inner.nbytes(features)


def _run(
    engine: TorchEngine, x: np.ndarray, chunk: int, budget: int
) -> tuple[CountingRunner, NetworkOutput]:
    runner = CountingRunner(engine)
    with torch.inference_mode():
        output = run_staged(runner, x, chunk_slices=chunk, skip_cache_bytes=budget)
    return runner, output


def test_chunks_cover_the_series_once(tiny_weights: ModelWeights) -> None:
    engine = TorchEngine(tiny_weights, device="cpu")
    x = np.random.default_rng(0).random((10, 3, 32, 32), dtype=np.float32)
    runner, output = _run(engine, x, chunk=4, budget=2**30)
    assert runner.encoded == [4, 4, 2]  # kept skips: no second encoder pass
    assert runner.recurred == [10]
    assert runner.decoded == [(0, 4), (4, 8), (8, 10)]
    assert output.seg_probs.shape == (10, 3, 32, 32) and output.slice_logits.shape == (10, 6)


def test_skip_budget_bounds_memory_by_re_encoding(tiny_weights: ModelWeights) -> None:
    """The skips are kept when the whole series' fit the budget, else none are (a partial cache
    would hold the budget through the recurrence for little saved work)."""
    engine = TorchEngine(tiny_weights, device="cpu")
    x = np.random.default_rng(0).random((10, 3, 32, 32), dtype=np.float32)
    _, kept = _run(engine, x, chunk=4, budget=2**30)
    one_chunk = engine._runner.nbytes(engine._runner.encode(x[:4])[:-1])
    whole_series = one_chunk * 10 // 4
    runner, _ = _run(engine, x, chunk=4, budget=whole_series)
    assert runner.encoded == [4, 4, 2]  # exactly fits: nothing encoded twice
    runner, recomputed = _run(engine, x, chunk=4, budget=whole_series - 1)
    assert runner.encoded == [4, 4, 2, 4, 4, 2]  # every chunk encoded again before decoding
    for a, b in zip(recomputed, kept, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_rejects_bad_input(tiny_weights: ModelWeights) -> None:
    runner = CountingRunner(TorchEngine(tiny_weights, device="cpu"))
    with pytest.raises(ValueError, match=r"expects \[S>=1, 3, H, W\]"):
        run_staged(runner, np.zeros((2, 1, 32, 32), dtype=np.float32), chunk_slices=2)
    with pytest.raises(ValueError, match="chunk_slices must be >= 1, got 0"):
        run_staged(runner, np.zeros((2, 3, 32, 32), dtype=np.float32), chunk_slices=0)


def test_a_sink_gets_every_chunk_in_order_and_nothing_is_collected(
    tiny_weights: ModelWeights,
) -> None:
    engine = TorchEngine(tiny_weights, device="cpu")
    x = np.random.default_rng(1).random((10, 3, 32, 32), dtype=np.float32)
    _, collected = _run(engine, x, chunk=4, budget=0)
    received: list[tuple[int, int, np.ndarray]] = []
    with torch.inference_mode():
        streamed = run_staged(
            CountingRunner(engine),
            x,
            chunk_slices=4,
            skip_cache_bytes=0,
            sink=lambda start, stop, probs: received.append((start, stop, probs.copy())),
        )
    assert [(start, stop) for start, stop, _ in received] == [(0, 4), (4, 8), (8, 10)]
    np.testing.assert_array_equal(np.concatenate([p for *_, p in received]), collected.seg_probs)
    assert streamed.seg_probs.shape == (0, *collected.seg_probs.shape[1:])
    np.testing.assert_array_equal(streamed.slice_logits, collected.slice_logits)
    np.testing.assert_array_equal(streamed.subject_logits, collected.subject_logits)
