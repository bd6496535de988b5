"""Randomisation ranges (ichnet_core.synthetic.config)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ichnet_core.synthetic import SyntheticConfig


def test_defaults_are_a_256_matrix_with_spacing_scaled_from_512() -> None:
    config = SyntheticConfig()
    assert (config.rows, config.columns) == (256, 256)
    assert config.pixel_spacing_mm == pytest.approx((0.8, 1.2))
    assert SyntheticConfig(rows=512, columns=512).pixel_spacing_mm == pytest.approx((0.4, 0.6))


def test_config_serialises_to_json_for_cache_keys() -> None:
    text = json.dumps(dataclasses.asdict(SyntheticConfig()), sort_keys=True)
    assert '"rows": 256' in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": 32}, "rows must be an int in"),
        ({"columns": 300.0}, "columns must be an int in"),
        ({"slice_spacing_mm": (5.0, 2.5)}, "slice_spacing_mm must be an ordered"),
        ({"atrophy": (0.0, 1.5)}, "atrophy must be an ordered"),
        ({"negative_fraction": 1.2}, "negative_fraction must be a probability"),
        ({"head_yaw_deg": -1.0}, "head_yaw_deg is a magnitude"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**kwargs)  # type: ignore[arg-type]
