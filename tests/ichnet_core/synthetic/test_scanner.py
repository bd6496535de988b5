"""Blur, noise, artefacts and storage (ichnet_core.synthetic.scanner)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ichnet_core.synthetic import SyntheticConfig
from ichnet_core.synthetic.geometry import fov_circle
from ichnet_core.synthetic.scanner import (
    MAX_HU,
    MIN_HU,
    StorageConvention,
    add_noise,
    add_streaks,
    finish,
    sample_scanner,
    to_stored,
)


def _params(**changes: object):
    params = sample_scanner(np.random.default_rng(0), SyntheticConfig(), thickness_mm=5.0)
    return dataclasses.replace(params, **changes)


def test_noise_has_the_requested_standard_deviation() -> None:
    params = _params(noise_sd_hu=7.0, noise_correlation_px=0.8, skull_base_noise_gain=0.0)
    image = np.zeros((4, 128, 128), dtype=np.float32)
    add_noise(image, params, np.random.default_rng(1), slice_z_mm=np.zeros(4))
    assert float(image.std()) == pytest.approx(7.0, rel=0.05)
    # Correlated like a reconstruction kernel: neighbours are alike.
    corr = np.corrcoef(image[:, :, :-1].ravel(), image[:, :, 1:].ravel())[0, 1]
    assert 0.2 < corr < 0.95


def test_noise_is_stronger_in_the_skull_base() -> None:
    params = _params(noise_sd_hu=5.0, skull_base_noise_gain=0.8)
    image = np.zeros((2, 96, 96), dtype=np.float32)
    add_noise(image, params, np.random.default_rng(2), slice_z_mm=np.array([-60.0, 30.0]))
    assert image[0].std() > 1.4 * image[1].std()


def test_noise_scales_with_matrix_and_thickness() -> None:
    rng = np.random.default_rng(3)
    config = SyntheticConfig(noise_sd_hu=(6.0, 6.0))
    thick = [sample_scanner(rng, config, 5.0) for _ in range(20)]
    thin = [sample_scanner(rng, config, 2.5) for _ in range(20)]
    small = [
        sample_scanner(rng, SyntheticConfig(rows=128, columns=128, noise_sd_hu=(6.0, 6.0)), 5.0)
        for _ in range(20)
    ]
    mean = lambda ps: np.mean([p.noise_sd_hu / (1.0 + 0.6 * p.sharpen) for p in ps])  # noqa: E731
    assert mean(thin) == pytest.approx(mean(thick) * np.sqrt(2.0), rel=1e-6)
    assert mean(small) == pytest.approx(mean(thick) / 2.0, rel=1e-6)


def test_streaks_only_near_the_petrous_level() -> None:
    params = _params(streaks=True, bar_hu=20.0, streak_hu=20.0, streak_count=3)
    image = np.zeros((2, 96, 96), dtype=np.float32)
    apices = np.array([[[60.0, 30.0], [60.0, 66.0]]] * 2)
    add_streaks(
        image, params, np.random.default_rng(0), apices, np.array([0.0, 60.0]), pixel_mm=1.0
    )
    assert image[0, 60, 48] < -10.0, "dark band between the petrous apices"
    assert np.abs(image[1]).max() == 0.0


@pytest.mark.parametrize(
    "storage",
    [
        StorageConvention(1, 16, 0.0, -2000),
        StorageConvention(0, 12, -1024.0, 0),
        StorageConvention(0, 12, -1024.0, None),
    ],
)
def test_stored_values_rescale_back_to_hu(storage: StorageConvention) -> None:
    rng = np.random.default_rng(4)
    fov = fov_circle(32, 32)
    hu = finish(rng.uniform(-1500.0, 3500.0, size=(2, 32, 32)).astype(np.float32), fov)
    assert hu.min() >= MIN_HU and hu.max() <= MAX_HU
    stored = to_stored(hu, storage, fov)
    assert stored.dtype == (np.int16 if storage.pixel_representation else np.uint16)
    back = stored.astype(np.float32) + storage.rescale_intercept
    assert np.array_equal(back[:, fov], hu[:, fov])
    if storage.padding_value is not None:
        assert np.all(stored[:, ~fov] == storage.padding_value)
    if storage.pixel_representation == 0:
        assert stored.max() < 2**storage.bits_stored


def test_unsigned_storage_needs_a_negative_intercept() -> None:
    with pytest.raises(ValueError, match="unsigned storage needs a rescale intercept"):
        StorageConvention(0, 12, 0.0, None)
