"""Test certificates for DICOM TLS, made at test time with the ``openssl`` command line.

Nothing here is committed as a file: each test session creates two CAs and the certificates
it needs under a temporary folder (private keys included, deleted with it).

* ``ca`` signs ``node`` (the ICHNet node: server and client use), ``peer`` (a PACS: server
  and client use) and ``node_other_name`` (valid, but for a host name nobody uses);
* ``rogue_ca`` signs ``rogue`` (a well-formed certificate the node must not trust).

Leaf certificates name ``127.0.0.1`` and ``localhost`` (subjectAltName), so host name checks
on loopback pass.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

#: RSA 2048 / SHA-256: accepted by OpenSSL 3 at its default security level and by dcmtk's
#: BCP 195 profiles.
_KEY: Final[str] = "rsa:2048"
_DAYS: Final[str] = "2"
_LEAF_EXTENSIONS: Final[str] = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth,clientAuth\n"
    "subjectAltName={san}\n"
)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its unencrypted PEM private key."""

    certificate: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Everything :func:`make_pki` creates."""

    ca: Path
    rogue_ca: Path
    node: KeyPair
    peer: KeyPair
    rogue: KeyPair
    node_other_name: KeyPair


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command line tool not installed (Debian package 'openssl')")
    subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)


def _make_ca(directory: Path, name: str) -> KeyPair:
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl(
        "req", "-x509", "-newkey", _KEY, "-nodes", "-sha256", "-days", _DAYS,
        "-keyout", str(pair.key), "-out", str(pair.certificate),
        "-subj", f"/O=ICHNet tests/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def _make_leaf(
    directory: Path,
    name: str,
    ca: KeyPair,
    san: str = "IP:127.0.0.1,DNS:localhost",
) -> KeyPair:
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    request = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text(_LEAF_EXTENSIONS.format(san=san))
    _openssl(
        "req", "-newkey", _KEY, "-nodes", "-sha256",
        "-keyout", str(pair.key), "-out", str(request), "-subj", f"/O=ICHNet tests/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-sha256", "-days", _DAYS, "-in", str(request),
        "-CA", str(ca.certificate), "-CAkey", str(ca.key), "-CAcreateserial",
        "-extfile", str(extensions), "-out", str(pair.certificate),
    )  # fmt: skip
    return pair


def make_pki(directory: Path) -> Pki:
    """Create the CAs and certificates described in the module docstring under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(directory, "test-ca")
    rogue_ca = _make_ca(directory, "rogue-ca")
    return Pki(
        ca=ca.certificate,
        rogue_ca=rogue_ca.certificate,
        node=_make_leaf(directory, "node", ca),
        peer=_make_leaf(directory, "peer", ca),
        rogue=_make_leaf(directory, "rogue", rogue_ca),
        node_other_name=_make_leaf(directory, "other-name", ca, san="DNS:pacs.invalid"),
    )
