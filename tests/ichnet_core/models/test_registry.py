"""Model registry: the named variants, duplicate protection, and every variant building and running."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ichnet_core.models import registry
from ichnet_core.models.ichnet import ICHNetConfig
from ichnet_core.models.registry import (
    DEFAULT_MODEL,
    create_model,
    list_models,
    model_config,
    register_model,
)

EXPECTED_MODELS = {"ichnet", "ichnet_large", "ichnet_cls", "ichnet_seg", "ichnet_no_att"}


def test_expected_variants_are_registered() -> None:
    assert set(list_models()) >= EXPECTED_MODELS
    assert list_models() == sorted(list_models())
    assert DEFAULT_MODEL == "ichnet"


def test_variant_configs() -> None:
    assert model_config("ichnet").widths == (16, 32, 64, 128)
    assert model_config("ichnet").input_size == 256
    assert model_config("ichnet_large").input_size == 512
    assert not model_config("ichnet_cls").seg_branch
    assert not model_config("ichnet_seg").cls_branch
    assert not model_config("ichnet_no_att").attention


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_runs_and_backpropagates(
    name: str, tiny_overrides: dict[str, Any]
) -> None:
    model = create_model(name, **tiny_overrides)
    out = model(torch.rand(1, 3, 3, 32, 32))
    config = model.config
    assert (out.seg_logits is not None) == config.seg_branch
    assert (out.slice_logits is not None) == config.cls_branch
    assert (out.subject_logits is not None) == config.cls_branch
    loss = sum(t.float().mean() for t in out if t is not None)
    loss.backward()
    assert any(p.grad is not None for p in model.parameters())
    # Overrides change only what they name; the variant's flags survive.
    reference = model_config(name)
    assert (config.seg_branch, config.cls_branch, config.attention) == (
        reference.seg_branch,
        reference.cls_branch,
        reference.attention,
    )
    assert config.widths == tiny_overrides["widths"]


def test_duplicate_name_raises() -> None:
    def ichnet() -> ICHNetConfig:
        return ICHNetConfig()

    with pytest.raises(ValueError, match="'ichnet' is already registered"):
        register_model(ichnet)


def test_register_new_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def ichnet_test_variant() -> ICHNetConfig:
        return ICHNetConfig(widths=(4, 8, 8, 8), input_size=32, lstm_hidden=2)

    assert register_model(ichnet_test_variant) is ichnet_test_variant
    assert "ichnet_test_variant" in list_models()
    assert create_model("ichnet_test_variant").config.lstm_hidden == 2


def test_unknown_name_and_override() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        create_model("resnet50")
    with pytest.raises(ValueError, match=r"unknown ICHNetConfig overrides \['depth'\]"):
        create_model("ichnet", depth=3)
