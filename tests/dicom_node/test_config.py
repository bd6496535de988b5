"""Node configuration: validation messages name the key and the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dicom_node.config import (
    ConfigError,
    NodeConfig,
    announced_max_pdu,
    engine_cache_dir,
    load_config,
    parse_config,
)
from tests.dicom_node.certificates import Pki, make_pki

CONF = Path(__file__).resolve().parents[2] / "conf" / "node.yaml"


def problems_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_example_config_loads_with_the_design_keys() -> None:
    config = load_config(CONF)
    assert config.node.ae_title == "ICHNET"
    assert config.node.port == 11112
    assert config.series.complete_after_s == 30
    assert config.series.settle_after_release_s == 1
    assert config.engine == "auto"
    assert [p.ae_title for p in config.peers] == ["ORTHANC"]
    assert config.selection.per_study == "one"
    assert config.selection.prefer_thickness_mm == 5.0
    assert config.selection.include == config.selection.exclude == ()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"node": {"port": "notaport"}}, "node.port: must be an integer 1-65535, got 'notaport'"),
        ({"node": {"port": 70000}}, "node.port: must be an integer 1-65535, got 70000"),
        ({"node": {"ae_title": "A" * 17}}, "node.ae_title: must be 1-16 characters"),
        ({"node": {"ae_title": "A\\B"}}, "node.ae_title: must not contain a backslash"),
        ({"peers": [{"ae_title": "PACS", "host": "h"}]}, "peers[0].port: is required"),
        (
            {"engine": "gpu"},
            "engine: input should be 'auto', 'tensorrt', 'onnxruntime', 'torch' or 'triton'",
        ),
        ({"nodes": {}}, "nodes: unknown key"),
        ({"series": {"complete_after_s": -1}}, "series.complete_after_s: must be a number >= 0"),
    ],
)
def test_each_problem_names_its_key(data: dict[str, object], expected: str) -> None:
    assert any(problem.startswith(expected) for problem in problems_of(data)), problems_of(data)


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ({"per_study": "best"}, "selection.per_study: input should be 'one' or 'all', got 'best'"),
        (
            {"prefer_thickness_mm": 0},
            "selection.prefer_thickness_mm: input should be greater than 0",
        ),
        (
            {"exclude": [{"convolution_kernel": "(?i)bone|h7("}]},
            "selection.exclude[0].convolution_kernel: '(?i)bone|h7(' is not a valid regular "
            "expression (missing ), unterminated subpattern",
        ),
        ({"include": [{"series_descr": "x"}]}, "selection.include[0].series_descr: unknown key"),
        ({"include": [{}]}, "selection.include[0]: names no attribute: give at least one of "),
        ({"include": {"calling_ae": "CT_ER"}}, "selection.include: must be a list of rules"),
        (
            {"head_keywords": ["KOPF*", "two words"]},
            "selection.head_keywords: 'two words' is not a word pattern",
        ),
    ],
)
def test_each_selection_problem_names_its_key(selection: dict[str, object], expected: str) -> None:
    problems = problems_of({"selection": selection})
    assert any(problem.startswith(expected) for problem in problems), problems


def test_selection_overrides_compile_their_expressions() -> None:
    config = parse_config(
        {
            "selection": {
                "include": [{"series_description": "(?i)cct|schaedel"}, {"calling_ae": "CT_ER"}],
                "exclude": [{"convolution_kernel": "(?i)bone|h7\\d", "calling_ae": "CT_2"}],
            }
        }
    )
    include, exclude = config.selection.include, config.selection.exclude
    assert [list(rule.patterns()) for rule in include] == [["series_description"], ["calling_ae"]]
    assert include[0].patterns()["series_description"].search("CCT nativ")
    assert list(exclude[0].patterns()) == ["convolution_kernel", "calling_ae"]
    assert exclude[0].patterns()["convolution_kernel"].search("H70h")


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


def test_security_keys_have_the_design_defaults() -> None:
    config = parse_config({"peers": [{"ae_title": "PACS", "host": "127.0.0.1", "port": 104}]})
    assert (
        config.limits.max_pdu_bytes,
        config.limits.max_instance_bytes,
        config.limits.max_frame_pixels,
    ) == (16777216, 268435456, 4194304)
    assert config.node.max_associations == 10
    assert config.node.tls is None
    [peer] = config.peers
    assert (peer.check_host, peer.tls) == (True, False)
    assert announced_max_pdu(config) == config.limits.max_pdu_bytes


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"limits": {"max_pdu_bytes": 4096}}, "limits.max_pdu_bytes: must be an integer >= 65536"),
        (
            {"limits": {"max_instance_bytes": 0}},
            "limits.max_instance_bytes: must be an integer >= 1",
        ),
        ({"limits": {"max_frame_pixels": "big"}}, "limits.max_frame_pixels: must be an integer"),
        ({"limits": {"max_pixels": 1}}, "limits.max_pixels: unknown key"),
        ({"node": {"max_associations": 0}}, "node.max_associations: must be an integer >= 1"),
        (
            {"node": {"max_pdu": 20000000}},
            "node.max_pdu: 20000000 is above limits.max_pdu_bytes 16777216",
        ),
        (
            {"node": {"tls": {"certificate": "/nonexistent/node.crt", "private_key": "/k"}}},
            "node.tls.certificate: file not found: '/nonexistent/node.crt'",
        ),
        ({"node": {"tls": {}}}, "node.tls.certificate: is required"),
        (
            {"peers": [{"ae_title": "P", "host": "h", "port": 1, "tls": True}]},
            "peers[0].tls: true needs node.tls",
        ),
        (
            {"peers": [{"ae_title": "P", "host": "h", "port": 1, "check_host": "maybe"}]},
            "peers[0].check_host: input should be a valid boolean",
        ),
    ],
)
def test_each_security_problem_names_its_key(data: dict[str, object], expected: str) -> None:
    assert any(problem.startswith(expected) for problem in problems_of(data)), problems_of(data)


def test_tls_files_are_checked_at_load(pki: Pki, tmp_path: Path) -> None:
    tls = {"certificate": str(pki.node.certificate), "private_key": str(pki.node.key)}
    assert any(
        p.startswith("node.tls: require_client_certificate is true but ca_certificates is not set")
        for p in problems_of({"node": {"tls": tls}})
    )
    config = parse_config(
        {
            "node": {"tls": {**tls, "ca_certificates": str(pki.ca)}},
            "peers": [{"ae_title": "P", "host": "h", "port": 1, "tls": True}],
        }
    )
    assert config.node.tls is not None and config.node.tls.require_client_certificate
    assert parse_config({"node": {"tls": {**tls, "require_client_certificate": False}}})

    mismatched = {**tls, "private_key": str(pki.peer.key), "require_client_certificate": False}
    [problem] = problems_of({"node": {"tls": mismatched}})
    assert problem.startswith("node.tls: certificate ") and "cannot be used together" in problem
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    [problem] = problems_of({"node": {"tls": {**tls, "ca_certificates": str(not_pem)}}})
    assert problem.startswith(f"node.tls: ca_certificates {str(not_pem)!r} holds no usable PEM")


def test_check_config_reports_a_tls_problem_by_its_key(pki: Pki, tmp_path: Path) -> None:
    config_file = tmp_path / "node.yaml"
    config_file.write_text(
        "node:\n  tls:\n"
        f"    certificate: {pki.node.certificate}\n"
        f"    private_key: {pki.peer.key}\n"
        "    require_client_certificate: false\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli", "check-config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode != 0
    assert f"{config_file}: node.tls: certificate " in run.stderr, run.stderr


def test_the_example_config_names_the_security_keys() -> None:
    text = CONF.read_text()
    for key in ("max_associations", "tls:", "check_host", "max_pdu_bytes", "max_frame_pixels"):
        assert key in text, key


def test_peer_outputs_default_to_seg_and_sr_and_name_their_problems() -> None:
    peer = {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}
    [default] = parse_config({"peers": [peer]}).peers
    assert default.outputs == ("seg", "sr")
    [all_three] = parse_config({"peers": [{**peer, "outputs": ["seg", "sr", "sc"]}]}).peers
    assert all_three.outputs == ("seg", "sr", "sc")
    for outputs, expected in (
        (["seg", "seg"], "peers[0].outputs: lists an output twice"),
        ([], "peers[0].outputs: must name at least one of seg, sr, sc"),
        (["png"], "peers[0].outputs[0]: input should be 'seg', 'sr' or 'sc', got 'png'"),
    ):
        problems = problems_of({"peers": [{**peer, "outputs": outputs}]})
        assert any(expected in p for p in problems), problems
