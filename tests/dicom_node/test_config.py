"""Node configuration: validation messages name the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.config import ConfigError, NodeConfig, engine_cache_dir, load_config, parse_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "node.yaml"


def problems_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_example_config_loads_with_the_design_keys() -> None:
    config = load_config(CONF)
    assert config.node.ae_title == "ICHNET"
    assert config.node.port == 11112
    assert config.series.complete_after_s == 5
    assert config.engine == "auto"
    assert [p.ae_title for p in config.peers] == ["ORTHANC"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"node": {"port": "notaport"}}, "node.port: must be an integer 1-65535, got 'notaport'"),
        ({"node": {"port": 70000}}, "node.port: must be an integer 1-65535, got 70000"),
        ({"node": {"ae_title": "A" * 17}}, "node.ae_title: must be 1-16 characters"),
        ({"node": {"ae_title": "A\\B"}}, "node.ae_title: must not contain a backslash"),
        ({"peers": [{"ae_title": "PACS", "host": "h"}]}, "peers[0].port: is required"),
        ({"engine": "gpu"}, "engine: input should be 'auto', 'tensorrt', 'onnxruntime' or 'torch'"),
        ({"nodes": {}}, "nodes: unknown key"),
        ({"series": {"complete_after_s": -1}}, "series.complete_after_s: must be a number >= 0"),
    ],
)
def test_each_problem_names_its_key(data: dict[str, object], expected: str) -> None:
    assert any(problem.startswith(expected) for problem in problems_of(data)), problems_of(data)


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({"node": {"port": "x", "ae_title": ""}, "extra": 1})
    assert len(problems) == 3


def test_duplicate_peer_titles_are_refused() -> None:
    peer = {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}
    assert any("listed twice" in p for p in problems_of({"peers": [peer, peer]}))


def test_peer_lookup_ignores_trailing_spaces_of_the_calling_title() -> None:
    config = parse_config({"peers": [{"ae_title": "PACS", "host": "127.0.0.1", "port": 104}]})
    assert config.peer("PACS  ") is not None
    assert config.peer("OTHER") is None


def test_engine_cache_defaults_to_the_storage_dir(tmp_path: Path) -> None:
    config = parse_config({"node": {"storage_dir": str(tmp_path)}})
    assert engine_cache_dir(config) == tmp_path / "engine-cache"
    assert engine_cache_dir(NodeConfig(model={"cache_dir": "/c"})) == Path("/c")


def test_unreadable_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
