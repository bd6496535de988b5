"""DICOM TLS (PS3.15 B.1, "The Basic TLS Secure Transport Connection Profile") from ``node.tls``.

Two :class:`ssl.SSLContext` objects come from one ``node.tls`` section:

* :func:`server_context` for the SCP: our certificate and key; peers' client certificates are
  checked against ``ca_certificates`` and, with ``require_client_certificate`` (the default),
  a peer without one signed by those CAs never gets to send a PDU;
* :func:`client_context` for sending results to peers with ``tls: true``: the same certificate
  and key as the client certificate, the peer's server certificate checked against
  ``ca_certificates`` and its name against the peer's configured ``host``.

Both require TLS 1.2 or later (BCP 195, which PS3.15 B.9's profile refers to); the cipher
choice is OpenSSL's default for that version, which dcmtk's BCP 195 profiles accept.
"""

from __future__ import annotations

import ssl
from typing import Final

from dicom_node.config import TlsSection

#: Oldest protocol version accepted in either direction (BCP 195: TLS 1.2 or later).
MINIMUM_TLS_VERSION: Final[ssl.TLSVersion] = ssl.TLSVersion.TLSv1_2


class TlsSetupError(OSError):
    """A ``node.tls`` file exists but cannot be used (not PEM, key and certificate differ, ...).

    An :class:`OSError` like the :class:`ssl.SSLError` it wraps, so ``ichnet-node serve``
    reports it as a start-up failure with this message.
    """


def _load_identity(context: ssl.SSLContext, tls: TlsSection) -> None:
    try:
        context.load_cert_chain(certfile=tls.certificate, keyfile=tls.private_key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(
            f"node.tls.certificate / node.tls.private_key: cannot load {str(tls.certificate)!r} "
            f"with {str(tls.private_key)!r} ({exc}); both must be PEM, the key unencrypted and "
            "matching the certificate"
        ) from exc


def _load_cas(context: ssl.SSLContext, tls: TlsSection) -> None:
    if tls.ca_certificates is None:
        return
    try:
        context.load_verify_locations(cafile=tls.ca_certificates)
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(
            f"node.tls.ca_certificates: cannot load {str(tls.ca_certificates)!r} as PEM "
            f"certificates ({exc})"
        ) from exc


def server_context(tls: TlsSection) -> ssl.SSLContext:
    """The SCP's TLS context.

    Raises
    ------
    TlsSetupError
        If the certificate, key or CA file cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_TLS_VERSION
    _load_identity(context, tls)
    _load_cas(context, tls)
    if tls.require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
    elif tls.ca_certificates is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(tls: TlsSection) -> ssl.SSLContext:
    """The TLS context for sending results: our certificate as client certificate.

    The peer's certificate must chain to ``ca_certificates`` (the system's CAs when that is
    not set) and name the peer's configured host (checked per association by pynetdicom's
    ``tls_args``).

    Raises
    ------
    TlsSetupError
        If the certificate, key or CA file cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    context.minimum_version = MINIMUM_TLS_VERSION
    _load_identity(context, tls)
    if tls.ca_certificates is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_cas(context, tls)
    return context
