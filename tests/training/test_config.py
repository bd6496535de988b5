"""Training configs: shipped files validate, errors name the key, the hash ignores run length."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import (
    ConfigError,
    config_hash,
    load_config,
    parse_compare_config,
    parse_config,
    read_yaml,
)

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    if path.name.startswith("compare"):
        compare = parse_compare_config(read_yaml(path))
        assert (path.parent / compare.base).is_file()
        assert len({run.name for run in compare.runs}) == len(compare.runs)
    else:
        load_config(path)


def test_errors_name_every_bad_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "optim": {"lr": 0, "epochs": "many"},
                "augment": {"flip_lr": 2},
                "data": {"datasets": [{"kind": "dicomdir", "root": "/x"}]},
            }
        )
    problems = "\n".join(info.value.problems)
    assert "optim.lr: input should be greater than 0, got 0" in problems
    assert "optim.epochs: input should be a valid integer" in problems
    assert "augment.flip_lr: input should be less than or equal to 1, got 2" in problems
    assert "data.datasets[0].kind: input should be" in problems
    with pytest.raises(ConfigError, match=r"fractions must add up to 1"):
        parse_config(
            {
                "data": {
                    "datasets": [
                        {
                            "kind": "rsna",
                            "root": "/x",
                            "fractions": {"train": 0.5, "val": 0.1, "test": 0.1},
                        }
                    ]
                }
            }
        )


def test_hash_changes_with_results_not_with_run_length() -> None:
    base = parse_config({})
    assert config_hash(base) == config_hash(parse_config({"optim": {"epochs": 99}}))
    assert config_hash(base) == config_hash(
        parse_config({"output_dir": "elsewhere", "cpu_threads": 1})
    )
    assert config_hash(base) != config_hash(parse_config({"optim": {"lr": 1e-4}}))
    assert config_hash(base) != config_hash(parse_config({"seed": 1}))


def test_compartment_weights_name_known_compartments_and_enter_the_hash_only_when_set() -> None:
    with pytest.raises(ConfigError, match=r"unknown compartment\(s\) \['SDHX'\]"):
        parse_config({"loss": {"seg_ce_compartment_weights": {"SDHX": 2.0}}})
    base = parse_config({})
    # Empty = the key did not exist: older configs and their checkpoints keep their hash.
    assert config_hash(base) == config_hash(
        parse_config({"loss": {"seg_ce_compartment_weights": {}}})
    )
    assert config_hash(base) != config_hash(
        parse_config({"loss": {"seg_ce_compartment_weights": {"SDH": 4.0}}})
    )


def test_a_compartment_factor_of_one_is_no_factor() -> None:
    # compare_diag switches its base's EDH factor off with 1.0 and keeps its reports' hash.
    weighted = parse_config({"loss": {"seg_ce_compartment_weights": {"SDH": 5.0}}})
    switched_off = parse_config({"loss": {"seg_ce_compartment_weights": {"SDH": 5.0, "EDH": 1.0}}})
    assert switched_off.loss.seg_ce_compartment_weights == {"SDH": 5.0}
    assert config_hash(switched_off) == config_hash(weighted)
    assert config_hash(weighted) != config_hash(
        parse_config({"loss": {"seg_ce_compartment_weights": {"SDH": 5.0, "EDH": 5.0}}})
    )
