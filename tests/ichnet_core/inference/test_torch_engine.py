"""PyTorch engine: the reference on synthetic volumes (shapes, ranges, chunking, staging) and the
optimised settings (batch-norm folding, CPU feature detection, device checks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ichnet_core.imaging.volume import Volume
from ichnet_core.inference.pipeline import prepare_input
from ichnet_core.inference.torch_engine import (
    Precision,
    TorchEngine,
    TorchSettings,
    cpu_supports_bf16,
    fold_batch_norms,
)
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
    x, _ = prepare_input(make_volume(slices=5), engine.grid)
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


def test_fold_batch_norms_keeps_the_function(decisive_weights: ModelWeights) -> None:
    engine = TorchEngine(decisive_weights, device="cpu")
    folded = fold_batch_norms(engine.model)
    assert not [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [m for m in engine.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=generator)
    seq_out = torch.rand(3, 8, 4, 4, generator=generator)  # ConvLSTM output: 2 x 4 channels
    with torch.inference_mode():
        expected, actual = engine.model.encode(x), folded.encode(x)
        for a, b in zip(actual, expected, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            folded.decode(expected, seq_out),
            engine.model.decode(expected, seq_out),
            atol=1e-4,
            rtol=1e-5,
        )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu avx512f avx512_bf16 amx_tile", True),
        ("fpu amx_bf16", True),
        ("fpu avx512f avx2", False),
    ],
)
def test_cpu_supports_bf16_reads_the_flags(tmp_path: Path, flags: str, expected: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n")
    assert cpu_supports_bf16(cpuinfo) is expected


def test_optimized_settings_follow_the_device() -> None:
    cpu = TorchSettings.optimized("cpu")
    assert cpu.channels_last and cpu.fold_batch_norm and not cpu.cuda_graphs
    assert cpu.precision is (Precision.BF16 if cpu_supports_bf16() else Precision.FP32)
    cuda = TorchSettings.optimized("cuda")
    assert cuda.precision is Precision.FP16 and cuda.cuda_graphs
    assert TorchSettings.reference().describe() == "fp32"
    assert cuda.describe() == "fp16+channels_last+fold_bn+cuda_graphs"


def test_settings_the_cpu_cannot_run(tiny_weights: ModelWeights) -> None:
    with pytest.raises(ValueError, match="needs a CUDA device"):
        TorchEngine(tiny_weights, device="cpu", settings=TorchSettings(Precision.FP16))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        TorchEngine(tiny_weights, device="cpu", settings=TorchSettings(cuda_graphs=True))


def test_optimized_engine_reports_its_settings(tiny_weights: ModelWeights) -> None:
    engine = TorchEngine.optimized(tiny_weights, device="cpu", precision=Precision.FP32)
    assert engine.settings.precision is Precision.FP32 and engine.settings.channels_last
    assert engine.description == "torch cpu fp32+channels_last+fold_bn"
