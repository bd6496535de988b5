"""ICHNet weight files: format, sha256-checked loading, saving, and the bundled default.

A weights file is ``torch.save`` of one dict (read back with ``weights_only=True``, so loading
never runs pickled code)::

    {"format": "ichnet-weights/1",
     "model_name": "ichnet",                  # registry name of the variant it was made from
     "config": {...},                         # ICHNetConfig.to_dict(): the file alone rebuilds it
     "state_dict": {...},                     # floating tensors stored as float16
     "metadata": {"version": ..., "trained_on": ..., "description": ...,
                  "operating_points": {...},  # optional, see ichnet_core.operating_points
                  ...}}

The package ships one default file in ``ichnet_core/models/weights/`` with a ``manifest.json``
that records its sha256. The bundled file is *always* checked against the manifest; an external
file is checked against the sha256 the caller expects (node config, CLI). There is no switch to
turn a check off: a mismatch raises :class:`WeightsError`.

The bundled file comes from ``ichnet-train export`` (see docs/model_card.md for the command).
Random weights for tests and benchmarks are made there (``save_weights`` of a fresh model).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import torch
from torch import Tensor

from ichnet_core.durable import write_atomic
from ichnet_core.models.ichnet import ICHNet, ICHNetConfig
from ichnet_core.operating_points import OperatingPoints, OperatingPointsError

logger = logging.getLogger(__name__)

#: Tag of the weights file format; bump it when the layout of the saved dict changes.
WEIGHTS_FORMAT: Final[str] = "ichnet-weights/1"
#: Tag of the manifest format.
MANIFEST_FORMAT: Final[str] = "ichnet-weights-manifest/1"
#: Folder of the weights that ship with the package.
BUNDLED_WEIGHTS_DIR: Final[Path] = Path(__file__).resolve().parent / "weights"
MANIFEST_PATH: Final[Path] = BUNDLED_WEIGHTS_DIR / "manifest.json"
#: Metadata every weights file must carry, so result.json and the SR can say what ran.
#: What the weights learned from: ``none`` (random initialisation), ``synthetic`` or ``real``.
TRAINING_DATA_VALUES: Final[tuple[str, ...]] = ("none", "synthetic", "real")
REQUIRED_METADATA: Final[tuple[str, ...]] = (
    "version",
    "trained_on",
    "training_data",
    "description",
)
#: Keys of the saved dict.
_PAYLOAD_KEYS: Final[frozenset[str]] = frozenset(
    {"format", "model_name", "config", "state_dict", "metadata"}
)
#: Storage precision of floating tensors: halves the file; inference runs in float32 anyway.
STORAGE_DTYPE: Final[torch.dtype] = torch.float16
#: Permissions of written files (mkstemp would leave 0600; weights are shared read-only data).
WRITTEN_FILE_MODE: Final[int] = 0o644
_SHA256_PATTERN: Final[re.Pattern[str]] = re.compile(r"[0-9a-f]{64}")


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable, malformed, or not the file that was expected."""


@dataclass(frozen=True)
class ModelWeights:
    """A verified weights file, loaded on the CPU.

    Attributes
    ----------
    path:
        Where the file was read from.
    sha256:
        Hex sha256 of the file's bytes (result.json ``model.weights_sha256``).
    model_name:
        Registry name of the variant the weights were made for.
    version:
        Version of the weights (``metadata["version"]``).
    config:
        The exact network configuration.
    state_dict:
        Read-only parameter mapping as stored (floating tensors in float16).
    metadata:
        Read-only provenance: at least ``version``, ``trained_on`` and ``description``.
    """

    path: Path
    sha256: str
    model_name: str
    version: str
    config: ICHNetConfig
    state_dict: Mapping[str, Tensor]
    metadata: Mapping[str, Any]

    @property
    def trained_on(self) -> str:
        """What the weights were trained on, in words."""
        return str(self.metadata["trained_on"])

    @property
    def training_data(self) -> str:
        """``none``, ``synthetic`` or ``real``: the machine-readable kind of ``trained_on``."""
        return str(self.metadata["training_data"])

    @property
    def description(self) -> str:
        """Human description (states plainly when the weights are untrained)."""
        return str(self.metadata["description"])

    @property
    def operating_points(self) -> OperatingPoints:
        """Decision thresholds chosen on validation data; 0.5 for every output when the
        weights carry none (:meth:`OperatingPoints.default`)."""
        return OperatingPoints.from_metadata(self.metadata)


def sha256_of_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _normalise_sha256(value: str) -> str:
    normalised = value.strip().lower()
    if not _SHA256_PATTERN.fullmatch(normalised):
        raise ValueError(f"expected_sha256 must be 64 hex digits, got {value!r}")
    return normalised


def _read_manifest() -> dict[str, Any]:
    try:
        manifest = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(
            f"cannot read the bundled weights manifest {MANIFEST_PATH}: {exc}"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise WeightsError(
            f"{MANIFEST_PATH} is not an {MANIFEST_FORMAT!r} manifest "
            f"(format={manifest.get('format') if isinstance(manifest, dict) else None!r})"
        )
    return manifest


def _manifest_entry(path: Path) -> Mapping[str, Any] | None:
    """The manifest entry of ``path`` when it is a bundled file, else ``None``."""
    if path.resolve().parent != BUNDLED_WEIGHTS_DIR:
        return None
    entry = _read_manifest().get("files", {}).get(path.name)
    if entry is None:
        raise WeightsError(
            f"{path} lies in the bundled weights folder but {MANIFEST_PATH.name} does not list it"
        )
    return entry


def default_weights_path() -> Path:
    """Path of the bundled default weights, as named by the manifest."""
    manifest = _read_manifest()
    name = manifest.get("default")
    if not isinstance(name, str) or name not in manifest.get("files", {}):
        raise WeightsError(
            f"{MANIFEST_PATH} names no listed default weights file (default={name!r})"
        )
    return BUNDLED_WEIGHTS_DIR / name


def _parse_payload(
    payload: object, path: Path
) -> tuple[str, ICHNetConfig, dict[str, Tensor], dict[str, Any]]:
    if not isinstance(payload, dict):
        raise WeightsError(f"{path} does not hold a weights dict (found {type(payload).__name__})")
    if payload.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(
            f"{path} has format {payload.get('format')!r}, expected {WEIGHTS_FORMAT!r}"
        )
    missing = sorted(_PAYLOAD_KEYS - set(payload))
    if missing:
        raise WeightsError(f"{path} lacks the keys {missing}")
    model_name, state_dict, metadata = (
        payload["model_name"],
        payload["state_dict"],
        payload["metadata"],
    )
    if not isinstance(model_name, str) or not model_name:
        raise WeightsError(f"{path} has no model name (found {model_name!r})")
    if not isinstance(state_dict, dict) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in state_dict.items()
    ):
        raise WeightsError(f"{path}: state_dict is not a mapping of names to tensors")
    if not isinstance(metadata, dict):
        raise WeightsError(f"{path}: metadata is not a dict (found {type(metadata).__name__})")
    absent = [key for key in REQUIRED_METADATA if key not in metadata]
    if absent:
        raise WeightsError(f"{path}: metadata lacks {absent}")
    if metadata["training_data"] not in TRAINING_DATA_VALUES:
        raise WeightsError(
            f"{path}: metadata training_data must be one of {TRAINING_DATA_VALUES}, "
            f"found {metadata['training_data']!r}"
        )
    try:
        config = ICHNetConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: invalid model config: {exc}") from exc
    try:
        OperatingPoints.from_metadata(metadata)
    except OperatingPointsError as exc:
        raise WeightsError(f"{path}: invalid operating points: {exc}") from exc
    return model_name, config, state_dict, metadata


def load_weights(path: Path | None = None, expected_sha256: str | None = None) -> ModelWeights:
    """Read and verify a weights file.

    Parameters
    ----------
    path:
        The file; ``None`` loads the bundled default.
    expected_sha256:
        Hex sha256 the file must have. Bundled files are always checked against the manifest
        whether or not this is given.

    Returns
    -------
    ModelWeights

    Raises
    ------
    WeightsError
        Missing or unreadable file, sha256 mismatch, or content that is not a weights file.
    ValueError
        ``expected_sha256`` is not 64 hex digits.
    """
    expected = _normalise_sha256(expected_sha256) if expected_sha256 is not None else None
    path = default_weights_path() if path is None else Path(path)
    entry = _manifest_entry(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    sha256 = sha256_of_bytes(data)  # hash the very bytes that get loaded
    if entry is not None and sha256 != entry.get("sha256"):
        raise WeightsError(
            f"bundled weights {path} have sha256 {sha256} but {MANIFEST_PATH.name} expects "
            f"{entry.get('sha256')}: the installation is damaged or the file was replaced"
        )
    if expected is not None and sha256 != expected:
        raise WeightsError(f"weights file {path} has sha256 {sha256}, expected {expected}")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt archives and unsafe pickles
        raise WeightsError(f"cannot load weights file {path}: {exc}") from exc
    model_name, config, state_dict, metadata = _parse_payload(payload, path)
    if entry is not None and (
        entry.get("model_name") != model_name or entry.get("version") != metadata["version"]
    ):
        raise WeightsError(
            f"{MANIFEST_PATH.name} lists {path.name} as {entry.get('model_name')!r} "
            f"{entry.get('version')!r} but the file holds {model_name!r} {metadata['version']!r}"
        )
    if entry is None and expected is None:
        logger.warning("weights %s loaded without an expected sha256: integrity unchecked", path)
    operating_points = OperatingPoints.from_metadata(metadata)
    if operating_points.is_default:
        logger.warning(
            "weights %s carry no operating points: every output is called present from "
            "probability %s (run `ichnet-train operating-points` and export again)",
            path,
            operating_points.subject["any"],
        )
    logger.info(
        "loaded weights %s: model %s version %s sha256 %s",
        path,
        model_name,
        metadata["version"],
        sha256,
    )
    return ModelWeights(
        path=path,
        sha256=sha256,
        model_name=model_name,
        version=str(metadata["version"]),
        config=config,
        state_dict=MappingProxyType(state_dict),
        metadata=MappingProxyType(metadata),
    )


def _storage_state_dict(model: ICHNet) -> dict[str, Tensor]:
    stored: dict[str, Tensor] = {}
    for key, tensor in model.state_dict().items():
        value = tensor.detach().to("cpu").clone()
        if value.is_floating_point():
            value = value.to(STORAGE_DTYPE)
            if not torch.isfinite(value).all():
                raise ValueError(f"{key} does not fit in {STORAGE_DTYPE} (non-finite after cast)")
        stored[key] = value.contiguous()
    return stored


def save_weights(model: ICHNet, path: Path, *, name: str, metadata: Mapping[str, Any]) -> str:
    """Write ``model`` as a weights file and return its sha256.

    The bytes do not depend on the path or the time, so the same model gives the same sha256.

    Parameters
    ----------
    model:
        The network; its config is stored with it.
    path:
        Destination (parent folders are created).
    name:
        Registry name of the variant.
    metadata:
        JSON-serialisable provenance with at least ``version``, ``trained_on``, ``description``.

    Raises
    ------
    ValueError
        Empty name, missing or non-JSON metadata, or a weight that overflows float16.
    """
    if not name:
        raise ValueError("save_weights needs a non-empty model name")
    absent = [key for key in REQUIRED_METADATA if key not in metadata]
    if absent:
        raise ValueError(f"weights metadata lacks {absent} (required: {list(REQUIRED_METADATA)})")
    if metadata["training_data"] not in TRAINING_DATA_VALUES:
        raise ValueError(
            f"weights metadata training_data must be one of {TRAINING_DATA_VALUES}, "
            f"found {metadata['training_data']!r}"
        )
    try:
        # The JSON round trip also turns str/int subclasses (e.g. torch.__version__) into the
        # plain types that torch.load(weights_only=True) accepts.
        plain_metadata = json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weights metadata must be JSON-serialisable: {exc}") from exc
    payload = {
        "format": WEIGHTS_FORMAT,
        "model_name": name,
        "config": model.config.to_dict(),
        "state_dict": _storage_state_dict(model),
        "metadata": plain_metadata,
    }
    buffer = io.BytesIO()  # an in-memory archive: no file name or path ends up in the bytes
    torch.save(payload, buffer)
    data = buffer.getvalue()
    write_atomic(Path(path), data, mode=WRITTEN_FILE_MODE)
    sha256 = sha256_of_bytes(data)
    logger.info("saved weights %s: model %s sha256 %s", path, name, sha256)
    return sha256


def build_model(weights: ModelWeights) -> ICHNet:
    """The network of ``weights`` in float32 eval mode, on the CPU.

    Raises
    ------
    WeightsError
        When the state dict does not match the stored config.
    """
    model = ICHNet(weights.config)
    state = {
        key: value.float() if value.is_floating_point() else value
        for key, value in weights.state_dict.items()
    }
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"weights {weights.path} do not fit their own config: {exc}") from exc
    return model.float().eval()


def register_bundled_weights(path: Path, *, make_default: bool = True) -> None:
    """Record a file of the bundled folder in ``manifest.json`` (sha256, name, provenance).

    Raises
    ------
    ValueError
        When ``path`` is not in the bundled weights folder.
    """
    path = Path(path).resolve()
    if path.parent != BUNDLED_WEIGHTS_DIR:
        raise ValueError(f"{path} is not in the bundled weights folder {BUNDLED_WEIGHTS_DIR}")
    data = path.read_bytes()
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model_name, _, _, metadata = _parse_payload(payload, path)
    manifest: dict[str, Any] = (
        _read_manifest() if MANIFEST_PATH.exists() else {"format": MANIFEST_FORMAT, "files": {}}
    )
    manifest["files"][path.name] = {
        "sha256": sha256_of_bytes(data),
        "model_name": model_name,
        "version": metadata["version"],
        "trained_on": metadata["trained_on"],
        "training_data": metadata["training_data"],
        "description": metadata["description"],
    }
    if make_default:
        manifest["default"] = path.name
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    write_atomic(MANIFEST_PATH, text.encode("utf-8"), mode=WRITTEN_FILE_MODE)
