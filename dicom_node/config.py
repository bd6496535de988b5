"""Typed node configuration (conf/node.yaml), validated once at load time.

Admins edit YAML; mistakes must surface before the node binds a port, with a message that names
the key and the problem (``node.port: must be an integer 1-65535, got 'notaport'``). pydantic does
the tree walking; the validators below phrase the messages.
"""

from __future__ import annotations

import re
import ssl
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dicom_node.header_evidence import pattern_problem
from dicom_node.layout import StorageLayout
from ichnet_core.config_errors import ConfigError, format_validation_error, read_yaml
from ichnet_core.inference.base import MAX_SERIES_SLICES, EngineName

# PS3.5 6.2: AE is 16 characters of the default repertoire, no backslash and no control characters.
_AE_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


def _ae_title(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be an AE title string, got {value!r}")
    stripped = value.strip(" ")
    if not 1 <= len(stripped) <= 16:
        raise ValueError(f"must be 1-16 characters (PS3.5 AE), got {value!r}")
    if _AE_FORBIDDEN.search(stripped):
        raise ValueError(f"must not contain a backslash or control characters, got {value!r}")
    return stripped


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be an integer 1-65535, got {value!r}")
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"must be an integer 1-65535, got {value!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"must be an integer 1-65535, got {value!r}")
    return port


def _non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"must be a number >= 0, got {value!r}")
    return float(value)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be an integer >= 1, got {value!r}")
    return value


def _host(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"must be a host name or IP address, got {value!r}")
    return value


def _http_url(value: Any) -> str:
    text = str(value).strip()
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {value!r}")
    return text


def _at_least(minimum: int) -> Any:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum}, got {value!r}")
        return value

    return BeforeValidator(check)


def _readable_file(value: Any) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise ValueError(f"must be the path of a PEM file, got {value!r}")
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"file not found: {str(path)!r}")
    return path


AETitle = Annotated[str, BeforeValidator(_ae_title)]
Port = Annotated[int, BeforeValidator(_port)]
Seconds = Annotated[float, BeforeValidator(_non_negative_number)]
PositiveInt = Annotated[int, BeforeValidator(_positive_int)]
Host = Annotated[str, BeforeValidator(_host)]
PemFile = Annotated[Path, BeforeValidator(_readable_file)]
#: A result object a peer can get (``peers[].outputs``).
ResultOutput = Literal["seg", "sr", "sc"]

#: Smallest ``limits.max_pdu_bytes`` accepted: an A-ASSOCIATE-RQ proposing the 128 presentation
#: contexts a storescu may offer is tens of kB, and PS3.8 D.1 lets peers assume 4096-byte PDUs.
MIN_PDU_LIMIT_BYTES: Final[int] = 65536


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSection(_Section):
    """DICOM TLS (PS3.15 Annex B.1) for the SCP, and the client certificate for sending.

    Files are PEM. The private key must not be encrypted (the node starts unattended).
    """

    #: The node's certificate (its chain may follow in the same file).
    certificate: PemFile
    private_key: PemFile
    #: CAs that sign the peers' certificates: checks client certificates of senders and the
    #: server certificates of peers with ``tls: true``.
    ca_certificates: PemFile | None = None
    #: Refuse a TLS connection whose peer shows no certificate signed by ``ca_certificates``.
    require_client_certificate: bool = True

    @model_validator(mode="after")
    def _usable(self) -> TlsSection:
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError(
                "require_client_certificate is true but ca_certificates is not set: "
                "there is nothing to check client certificates against"
            )
        # Load the files once here so check-config finds what the SCP would fail on at start.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.certificate, self.private_key)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"certificate {str(self.certificate)!r} and private_key "
                f"{str(self.private_key)!r} cannot be used together ({exc}); both must be PEM, "
                "the key unencrypted and matching the certificate"
            ) from None
        if self.ca_certificates is not None:
            try:
                context.load_verify_locations(cafile=self.ca_certificates)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    f"ca_certificates {str(self.ca_certificates)!r} holds no usable PEM "
                    f"certificate ({exc})"
                ) from None
        return self


class NodeSection(_Section):
    """Our own DICOM identity and where received data lives."""

    ae_title: AETitle = "ICHNET"
    bind: Host = "127.0.0.1"
    port: Port = 11112
    storage_dir: Path = Path("var/ichnet")
    #: Maximum Length Received we announce (PS3.8 D.1): the largest P-DATA-TF PDU a peer may
    #: send. 0 = announce ``limits.max_pdu_bytes``, the largest the node accepts at all.
    max_pdu: Annotated[int, Field(ge=0)] = 0
    acse_timeout_s: Seconds = 30.0
    dimse_timeout_s: Seconds = 60.0
    network_timeout_s: Seconds = 60.0
    #: Port for Prometheus ``/metrics`` and ``/healthz`` on ``bind``; null disables the endpoint.
    metrics_port: Port | None = None
    #: Concurrent associations in all; one more is rejected (transient, local limit exceeded).
    max_associations: PositiveInt = 10
    #: DICOM TLS for the SCP; absent = plain TCP.
    tls: TlsSection | None = None

    @property
    def layout(self) -> StorageLayout:
        """The folders and files under ``storage_dir`` (:mod:`dicom_node.layout`)."""
        return StorageLayout(Path(self.storage_dir))


class Peer(_Section):
    """A DICOM peer allowed to send to us; results go back to its host/port."""

    ae_title: AETitle
    host: Host
    port: Port
    #: Accept this calling AE title only from ``host`` (its resolved addresses).
    check_host: bool = True
    #: Send results to this peer over TLS, with ``node.tls``'s certificate as client certificate.
    tls: bool = False
    #: Result objects this peer gets: ``seg``, ``sr``, ``sc`` (secondary-capture key images for
    #: viewers that cannot show a SEG).
    outputs: tuple[ResultOutput, ...] = ("seg", "sr")
    #: Concurrent associations from this calling AE title; one more is rejected (transient,
    #: local limit exceeded), so one peer cannot take every slot of ``node.max_associations``.
    #: null = only the global limit.
    max_associations: PositiveInt | None = None

    @field_validator("outputs")
    @classmethod
    def _distinct_outputs(cls, value: tuple[ResultOutput, ...]) -> tuple[ResultOutput, ...]:
        if not value:
            raise ValueError("must name at least one of seg, sr, sc")
        if len(set(value)) != len(value):
            raise ValueError(f"lists an output twice: {list(value)}")
        return value


class LimitsSection(_Section):
    """Sizes checked before anything large is allocated (../shared/DESIGN.md "Config")."""

    #: Largest PDU length (PS3.8 9.3.1: the bytes after the 6-byte PDU header) of any PDU
    #: type; a peer announcing a larger one is aborted before the PDU body is read.
    max_pdu_bytes: Annotated[int, _at_least(MIN_PDU_LIMIT_BYTES)] = 16 * 1024 * 1024
    #: Largest instance: the data set as received, after inflation (Deflate transfer syntax),
    #: and the pixel data after decompression (Rows x Columns x Samples x Bits x Frames).
    max_instance_bytes: PositiveInt = 256 * 1024 * 1024
    #: Largest Rows x Columns of one frame, checked from the header.
    max_frame_pixels: PositiveInt = 2048 * 2048
    #: Largest series analysed, in voxels (Rows x Columns x frames summed over its instances),
    #: checked from the headers before any pixel data is read. One job's memory grows with it
    #: (about 10 bytes a voxel: stored pixels, HU volume, labels, SEG); 400 x 512 x 512 keeps a
    #: job within 2 GB (bench/memory_budget.py). A larger series is skipped with the reason.
    max_series_voxels: PositiveInt = 400 * 512 * 512


class SeriesSection(_Section):
    """When a series counts as complete (the two rules of :mod:`dicom_node.series_tracker`)."""

    #: Quiet period: the fallback rule, long enough for a slow sender.
    complete_after_s: Seconds = 30.0
    #: A series whose association was released and whose slices form one gap-free stack is
    #: complete after this much quiet; 0 turns the rule off.
    settle_after_release_s: Seconds = 1.0
    #: How often the assembler looks for complete series (a lock and a dict walk: cheap; it
    #: adds up to this much to the settle time).
    poll_interval_s: Seconds = 0.1


def _regex(value: Any) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a regular expression (a non-empty string), got {value!r}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a valid regular expression ({exc})") from None


def _word_patterns(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of word patterns, got {value!r}")
    for item in value:
        problem = pattern_problem(item) if isinstance(item, str) else f"{item!r} is not text"
        if problem:
            raise ValueError(problem)
    return tuple(value)


def _rule_list(value: Any) -> Any:
    if not isinstance(value, list | tuple):
        raise ValueError(
            "must be a list of rules, e.g. [{series_description: '(?i)cct'}, {calling_ae: CT_ER}]"
            f", got {value!r}"
        )
    return value


Regex = Annotated[re.Pattern[str], BeforeValidator(_regex)]
WordPatterns = Annotated[tuple[str, ...], BeforeValidator(_word_patterns)]


class SelectionOverride(_Section):
    """One admin override rule: every attribute it names must match (``re.search``).

    A series matches the rule when each named attribute's value (any of its distinct values in
    the series, ``""`` when absent) matches the rule's regular expression.
    """

    series_description: Regex | None = None
    study_description: Regex | None = None
    protocol_name: Regex | None = None
    body_part_examined: Regex | None = None
    convolution_kernel: Regex | None = None
    image_type: Regex | None = None
    manufacturer: Regex | None = None
    manufacturer_model_name: Regex | None = None
    station_name: Regex | None = None
    institution_name: Regex | None = None
    #: The calling AE title of the association that sent the series.
    calling_ae: Regex | None = None

    @model_validator(mode="after")
    def _names_something(self) -> SelectionOverride:
        if not self.patterns():
            raise ValueError(
                "names no attribute: give at least one of " + ", ".join(type(self).model_fields)
            )
        return self

    def patterns(self) -> dict[str, re.Pattern[str]]:
        """The attributes this rule names, with their expressions."""
        return {name: value for name, value in self if value is not None}


class SelectionSection(_Section):
    """Which series are suitable for ICHNet (axial head CT); everything else is skipped with a
    reason. README "Why a series is skipped" lists the rules in the order they are checked."""

    modalities: tuple[str, ...] = ("CT",)
    #: ``one``: analyse the best series of a study (axial, soft-tissue kernel, thickness nearest
    #: ``prefer_thickness_mm``, full coverage); ``all``: every suitable series.
    per_study: Literal["one", "all"] = "one"
    prefer_thickness_mm: Annotated[float, Field(gt=0)] = 5.0
    #: Force-include: a matching series counts as a head whatever its headers and pixels say
    #: (the technical rules and the per-study choice still apply).
    include: Annotated[tuple[SelectionOverride, ...], BeforeValidator(_rule_list)] = ()
    #: Force-exclude: a matching series is never analysed.
    exclude: Annotated[tuple[SelectionOverride, ...], BeforeValidator(_rule_list)] = ()
    #: Site words for the head, added to the built-in multilingual list
    #: (dicom_node/selection_words.py): ``WORD``, ``STEM*`` or ``*PART*``.
    head_keywords: WordPatterns = ()
    #: Site words for other body regions, added to the built-in lists.
    non_head_keywords: WordPatterns = ()
    #: A series whose headers do not decide "head or not" is decided by the image check; false
    #: skips such series without looking at their pixels.
    allow_unlabelled_body_part: bool = True
    min_slices: PositiveInt = 5
    max_slices: PositiveInt = MAX_SERIES_SLICES
    max_slice_thickness_mm: Annotated[float, Field(gt=0)] = 10.0
    #: Largest angle between the slice normal and the patient's foot-head axis (gantry tilt is fine).
    max_axial_deviation_deg: Annotated[float, Field(gt=0, le=90)] = 35.0


class ModelSection(_Section):
    """Which weights the engines load. ``weights: null`` = the file shipped in the package."""

    weights: Path | None = None
    #: Expected sha256 of ``weights``; the bundled file is always checked against its manifest.
    weights_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    #: Slices per encoder/decoder chunk: bounds memory on large series.
    chunk_slices: PositiveInt = 16
    #: Where compiled engines (TensorRT plans, ONNX files) are cached; default under storage_dir.
    cache_dir: Path | None = None


class SenderSection(_Section):
    """Retries for sending results back (transient failures only).

    A PACS outage of an afternoon must not lose results: transient failures are retried with
    backoff (at most ``max_backoff_s`` apart) until ``give_up_after_hours`` after the job became
    SENDING, and only then FAILED (``ichnet-node jobs resend`` sends them later still).
    """

    #: Attempts before FAILED; null = no count limit, only ``give_up_after_hours``.
    max_attempts: PositiveInt | None = None
    #: How long transient failures are retried, counted from when the job became SENDING.
    give_up_after_hours: Annotated[float, Field(gt=0)] = 24.0
    initial_backoff_s: Seconds = 2.0
    max_backoff_s: Seconds = 300.0


class TritonSection(_Section):
    """The Triton Inference Server of ``engine: triton`` (several nodes may share one)."""

    #: gRPC endpoint, ``host:port``.
    url: str = Field(default="127.0.0.1:8001", pattern=r"^[^\s:/]+:\d{1,5}$")
    #: Model name in the server's repository (``ichnet-node triton-repo`` writes ``ichnet``).
    model: str = Field(default="ichnet", min_length=1)
    #: Longest wait for one series' answer; a timeout is transient (the job is retried later),
    #: so set it above the server's slowest series.
    timeout_s: Annotated[float, Field(gt=0)] = 600.0


class NotificationTarget(_Section):
    """One endpoint that gets a push when a result is ready (DESIGN.md ``notifications:``)."""

    url: Annotated[str, BeforeValidator(_http_url)]
    #: ``positive``: only results with ``present.any``; ``all``: every result.
    send_on: Literal["positive", "all"] = "positive"
    #: ``json``: DESIGN.md's message; ``fhir``: a FHIR R4 DiagnosticReport.
    format: Literal["json", "fhir"] = "json"
    #: Seconds one POST may take (connect + answer) before it counts as a transient failure.
    timeout_s: Annotated[float, Field(gt=0)] = 10.0


class StorageSection(_Section):
    """Protection of the disk under ``storage_dir`` (../shared/DESIGN.md "Config")."""

    #: Below this much free space new associations are rejected (transient, local limit
    #: exceeded) and C-STORE answers 0xA700; accepted again once there is more.
    min_free_bytes: Annotated[int, Field(ge=0)] = 2 * 1024**3
    #: Spool, results and outbox of DONE and SKIPPED jobs are removed this long after the job
    #: ended; unfinished, FAILED and re-analysed-but-open series are never touched.
    retention_hours: Annotated[float, Field(gt=0)] = 168.0
    #: How often the retention loop looks for expired jobs.
    retention_interval_s: Annotated[float, Field(gt=0)] = 600.0


class AuditSyslogSection(_Section):
    """Where the audit trail is also sent, as RFC 5424 syslog over UDP (``log_format.py``)."""

    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 514
    #: Syslog facility name; authpriv (10) is where security/authorization events belong.
    facility: Literal[
        "auth",
        "authpriv",
        "daemon",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
        "user",
    ] = "authpriv"
    #: RFC 5424 APP-NAME of the messages.
    app_name: str = "ichnet-node"


class LoggingSection(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: text: one readable line per record; json: one JSON object per record (``log_format.py``).
    format: Literal["text", "json"] = "text"
    #: Also send every audit record to this syslog collector; ``None``: the audit file only.
    audit_syslog: AuditSyslogSection | None = None


class NodeConfig(_Section):
    """The whole node configuration (../shared/DESIGN.md "Config")."""

    node: NodeSection = NodeSection()
    peers: tuple[Peer, ...] = ()
    series: SeriesSection = SeriesSection()
    selection: SelectionSection = SelectionSection()
    engine: EngineName = EngineName.AUTO
    model: ModelSection = ModelSection()
    sender: SenderSection = SenderSection()
    logging: LoggingSection = LoggingSection()
    limits: LimitsSection = LimitsSection()
    triton: TritonSection = TritonSection()
    #: Pushes when a result is ready; retried like results (``sender:``), never delaying them.
    notifications: tuple[NotificationTarget, ...] = ()
    storage: StorageSection = StorageSection()

    @model_validator(mode="after")
    def _unique_peers(self) -> NodeConfig:
        seen: set[str] = set()
        for peer in self.peers:
            if peer.ae_title in seen:
                raise ValueError(f"peers: AE title {peer.ae_title!r} is listed twice")
            seen.add(peer.ae_title)
        return self

    def peer(self, ae_title: str) -> Peer | None:
        """The configured peer with this calling AE title (trailing spaces ignored), if any."""
        wanted = ae_title.strip()
        return next((p for p in self.peers if p.ae_title == wanted), None)


def engine_cache_dir(config: NodeConfig) -> Path:
    """Where engines keep exports and measurements: ``model.cache_dir`` or under storage_dir.

    Without a persistent cache, ``engine: auto`` would export and measure on every run.
    """
    return Path(config.model.cache_dir or config.node.layout.engine_cache)


def announced_max_pdu(config: NodeConfig) -> int:
    """The Maximum Length Received the SCP announces: ``node.max_pdu`` or, when that is 0,
    ``limits.max_pdu_bytes`` (a peer honouring it is never aborted for PDU size)."""
    return config.node.max_pdu or config.limits.max_pdu_bytes


def _cross_section_problems(config: NodeConfig) -> list[str]:
    """Problems that involve keys of two sections, each named by the key to change."""
    problems: list[str] = []
    if config.node.max_pdu > config.limits.max_pdu_bytes:
        problems.append(
            f"node.max_pdu: {config.node.max_pdu} is above limits.max_pdu_bytes "
            f"{config.limits.max_pdu_bytes}: peers would send PDUs the node aborts"
        )
    for index, peer in enumerate(config.peers):
        if peer.tls and config.node.tls is None:
            problems.append(
                f"peers[{index}].tls: true needs node.tls (its certificate and key are the "
                "client certificate for sending)"
            )
    return problems


def parse_config(data: Any) -> NodeConfig:
    """Validate an already-parsed YAML document; raises :class:`ConfigError`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"<top level>: must be a mapping of sections, got {type(data).__name__}"]
        )
    try:
        config = NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([format_validation_error(e) for e in exc.errors()]) from None
    problems = _cross_section_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a YAML config file; raises :class:`ConfigError` naming every problem."""
    return parse_config(read_yaml(path))
