"""PyTorch reference engine on synthetic volumes: shapes, ranges, chunking invariance, staging."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from ichnet_core.imaging.volume import Volume
from ichnet_core.inference.pipeline import prepare_input
from ichnet_core.inference.torch_engine import TorchEngine
from ichnet_core.models.weights import ModelWeights

VolumeFactory = Callable[..., Volume]
#: Float tolerance between batchings of the same computation (different kernels, same math).
ATOL = 1e-5


def test_prediction_shapes_and_ranges(
    tiny_weights: ModelWeights, make_volume: VolumeFactory
) -> None:
    volume = make_volume(slices=5, rows=40, columns=48)
    prediction = TorchEngine(tiny_weights, device="cpu").predict(volume, keep_probabilities=True)
    assert prediction.labels.shape == (5, 40, 48) and prediction.labels.dtype == np.uint8
    assert set(np.unique(prediction.labels)) <= {0, 1, 2}
    for probabilities, shape in (
        (prediction.slice_probabilities, (5, 6)),
        (prediction.subject_probabilities, (6,)),
    ):
        assert probabilities.shape == shape and probabilities.dtype == np.float32
        assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
    seg = prediction.segmentation_probabilities
    assert seg is not None and seg.shape == (5, 3, 32, 32) and seg.dtype == np.float32
    assert seg.min() >= 0.0 and seg.max() <= 1.0
    np.testing.assert_allclose(seg.sum(axis=1), 1.0, atol=1e-5)
    without = TorchEngine(tiny_weights, device="cpu").predict(volume)
    assert without.segmentation_probabilities is None


def test_single_slice(tiny_weights: ModelWeights, make_volume: VolumeFactory) -> None:
    prediction = TorchEngine(tiny_weights, device="cpu").predict(make_volume(slices=1))
    assert prediction.labels.shape == (1, 40, 48) and prediction.slice_probabilities.shape == (1, 6)


@pytest.mark.parametrize(("chunk_slices", "skip_cache_bytes"), [(2, 0), (3, 100_000), (16, 2**30)])
def test_chunked_equals_unchunked(
    tiny_weights: ModelWeights, make_volume: VolumeFactory, chunk_slices: int, skip_cache_bytes: int
) -> None:
    volume = make_volume(slices=7)
    reference = TorchEngine(tiny_weights, chunk_slices=64, device="cpu").predict(
        volume, keep_probabilities=True
    )
    chunked = TorchEngine(
        tiny_weights, chunk_slices=chunk_slices, skip_cache_bytes=skip_cache_bytes, device="cpu"
    ).predict(volume, keep_probabilities=True)
    assert reference.segmentation_probabilities is not None
    assert chunked.segmentation_probabilities is not None
    np.testing.assert_allclose(
        chunked.segmentation_probabilities, reference.segmentation_probabilities, atol=ATOL
    )
    np.testing.assert_allclose(
        chunked.slice_probabilities, reference.slice_probabilities, atol=ATOL
    )
    np.testing.assert_allclose(
        chunked.subject_probabilities, reference.subject_probabilities, atol=ATOL
    )
    # Labels agree wherever the two best classes are not a float-rounding tie.
    top2 = np.sort(reference.segmentation_probabilities, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > 1e-3
    small_labels = reference.segmentation_probabilities.argmax(axis=1)
    np.testing.assert_array_equal(
        chunked.segmentation_probabilities.argmax(axis=1)[decisive], small_labels[decisive]
    )
    assert np.mean(chunked.labels == reference.labels) > 0.999


def test_engine_matches_model_forward(
    tiny_weights: ModelWeights, make_volume: VolumeFactory
) -> None:
    engine = TorchEngine(tiny_weights, chunk_slices=2, device="cpu")
    x = prepare_input(make_volume(slices=5), engine.input_size)
    output = engine.run_network(x)
    with torch.inference_mode():
        forward = engine.model(torch.from_numpy(x)[None])
    np.testing.assert_allclose(
        output.seg_probs, torch.softmax(forward.seg_logits[0], dim=1).numpy(), atol=ATOL
    )
    np.testing.assert_allclose(output.slice_logits, forward.slice_logits[0].numpy(), atol=ATOL)
    np.testing.assert_allclose(output.subject_logits, forward.subject_logits[0].numpy(), atol=ATOL)


def test_rejects_model_without_a_branch(tiny_cls_weights: ModelWeights) -> None:
    with pytest.raises(ValueError, match=r"needs both branches.*seg_branch=False"):
        TorchEngine(tiny_cls_weights)


def test_rejects_bad_input(tiny_weights: ModelWeights) -> None:
    engine = TorchEngine(tiny_weights, device="cpu")
    with pytest.raises(ValueError, match=r"expects \[S>=1, 3, H, W\]"):
        engine.run_network(np.zeros((3, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="chunk_slices must be >= 1"):
        TorchEngine(tiny_weights, chunk_slices=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tiny_weights: ModelWeights, make_volume: VolumeFactory) -> None:
    volume = make_volume(slices=7)
    on_cpu = TorchEngine(tiny_weights, device="cpu").predict(volume, keep_probabilities=True)
    engine = TorchEngine(tiny_weights, chunk_slices=3, skip_cache_bytes=0)
    assert engine.device.type == "cuda"
    on_cuda = engine.predict(volume, keep_probabilities=True)
    assert on_cpu.segmentation_probabilities is not None
    assert on_cuda.segmentation_probabilities is not None
    # TF32 convolutions on recent GPUs round more coarsely than the CPU.
    np.testing.assert_allclose(
        on_cuda.segmentation_probabilities, on_cpu.segmentation_probabilities, atol=1e-3
    )
    np.testing.assert_allclose(on_cuda.slice_probabilities, on_cpu.slice_probabilities, atol=1e-3)
    np.testing.assert_allclose(
        on_cuda.subject_probabilities, on_cpu.subject_probabilities, atol=1e-3
    )
