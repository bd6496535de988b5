"""The SCP's transport: size limits enforced on the wire, TLS handshakes off the accept thread.

pynetdicom's DUL reads a PDU as two socket reads, its 6-byte header and then the whole body of
the length the header announces (``DULServiceProvider._read_pdu_data``), and a DIMSE message
keeps all its fragments in memory until the last one arrives. A peer, even one that never sends
an A-ASSOCIATE-RQ, could therefore make the node buffer up to 4 GiB per PDU and any amount per
message. :class:`GuardedAssociationSocket` sits at the point where those reads happen,
:meth:`AssociationSocket.recv`, and:

* reads each PDU header first and, when its PDU length (PS3.8 9.3.1: the bytes after the
  header) is above ``limits.max_pdu_bytes``, sends an A-ABORT (service provider,
  invalid-PDU-parameter value; PS3.8 9.3.8) and closes the connection, without reading or
  allocating the body;
* walks the PDV items of every P-DATA-TF (PS3.8 9.3.5.1) and aborts the same way once one
  message's data set fragments add up to more than ``limits.max_instance_bytes`` (or its
  command set to more than :data:`MAX_COMMAND_SET_BYTES`), so no message grows beyond that;
* closes a connection whose peer stops sending in the middle of a PDU for longer than the
  network timeout (pynetdicom would wait inside that read for ever, holding an association
  slot of ``node.max_associations``).

pynetdicom then sees the connection closed (Evt17) and ends the association (its log says the
PDU was "shorter than expected"; the node's own warning before it names the limit).

TLS: pynetdicom's :class:`~pynetdicom.transport.AssociationServer` wraps each accepted socket
with its ``ssl_context`` in the thread that accepts connections, handshake included, so one
client that connects and stays silent would stop the node from accepting anyone.
:class:`GuardedAssociationServer` keeps pynetdicom's ``ssl_context`` but wraps without the
handshake; :class:`GuardedRequestHandler` performs it on the connection's own thread, bounded by
the ACSE timeout, and logs why a handshake failed (no client certificate, unknown CA, plain TCP).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Any, Final, cast

from pynetdicom import evt
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from dicom_node.config import LimitsSection
from dicom_node.status import AbortReason, AbortSource

if TYPE_CHECKING:
    from pynetdicom.association import Association

logger = logging.getLogger(__name__)

#: PDU type (1 byte), reserved (1 byte), PDU length (4 bytes, big endian): PS3.8 9.3.1.
PDU_HEADER: Final[struct.Struct] = struct.Struct(">BBL")
#: PDV item header: item length (4), presentation context ID (1), message control header (1).
PDV_HEADER: Final[struct.Struct] = struct.Struct(">LBB")
#: A command set is a handful of elements (PS3.7 9.3, 10.3); a megabyte of one is an attack.
MAX_COMMAND_SET_BYTES: Final[int] = 1024 * 1024
#: Message control header bits (PS3.8 E.2): bit 0 set = command, bit 1 set = last fragment.
_COMMAND_BIT: Final[int] = 0x01
_LAST_FRAGMENT_BIT: Final[int] = 0x02
#: What the usual OpenSSL handshake errors mean for an administrator.
_HANDSHAKE_HINTS: Final[dict[str, str]] = {
    "WRONG_VERSION_NUMBER": ": the peer does not speak TLS (plain DICOM to the TLS port?)",
    "HTTP_REQUEST": ": the peer sent HTTP",
    "CERTIFICATE_VERIFY_FAILED": ": its certificate is not signed by node.tls.ca_certificates",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": (
        ": it sent no client certificate (node.tls.require_client_certificate)"
    ),
    "UNSUPPORTED_PROTOCOL": ": it offers only TLS versions below 1.2",
    "NO_SHARED_CIPHER": ": no cipher suite in common",
}
#: How long sending the A-ABORT may take before the connection is closed anyway.
_ABORT_SEND_TIMEOUT_S: Final[float] = 2.0


class PduType(IntEnum):
    """PDU types (PS3.8 9.3.1, Table 9-11)."""

    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


class TransportRefusal(str, Enum):
    """Why a connection was aborted at the transport; the value is the metrics label."""

    PDU_TOO_LARGE = "pdu_too_large"
    DATA_SET_TOO_LARGE = "data_set_too_large"
    COMMAND_SET_TOO_LARGE = "command_set_too_large"
    MALFORMED_P_DATA = "malformed_p_data"
    STALLED_PDU = "stalled_pdu"


@dataclass(frozen=True)
class TransportGuard:
    """What the guarded transport enforces and whom it tells.

    Attributes
    ----------
    limits:
        ``limits:`` of the config.
    handshake_timeout_s:
        Longest TLS handshake (the ACSE timeout: the time a peer has to associate anyway).
    read_timeout_s:
        Longest wait for the rest of a PDU once its header arrived (the network timeout);
        ``None`` waits forever. pynetdicom reads a PDU body in one blocking call, so without it
        a peer that stops in the middle of a PDU would hold its association slot for good.
    on_refused:
        Called for every connection aborted here with the :class:`TransportRefusal`, the
        peer's address, its calling AE title (empty before any A-ASSOCIATE-RQ) and the logged
        detail (metrics and the audit trail).
    on_tls_failure:
        Called once per failed TLS handshake with the peer's address and the reason.
    """

    limits: LimitsSection
    handshake_timeout_s: float
    read_timeout_s: float | None = None
    on_refused: Callable[[TransportRefusal, str, str, str], None] = lambda *_: None
    on_tls_failure: Callable[[str, str], None] = lambda *_: None


def _calling_ae(assoc: Association) -> str:
    primitive = assoc.requestor.primitive
    if primitive is None:
        return ""
    return str(getattr(primitive, "calling_ae_title", "") or "").strip()


def _describe_peer(assoc: Association) -> str:
    requestor = assoc.requestor
    title = _calling_ae(assoc)
    where = f"{requestor.address}:{requestor.port}"
    return f"calling AE {title!r} at {where}" if title else f"{where} (before any A-ASSOCIATE-RQ)"


class GuardedAssociationSocket(AssociationSocket):
    """An :class:`AssociationSocket` whose reads enforce :class:`TransportGuard` limits.

    pynetdicom creates the acceptor's socket inside ``RequestHandler._create_association``
    without a factory hook, so :meth:`adopt` turns that instance into this subclass (it adds
    only behaviour and a little state) rather than duplicating the creation code.
    """

    _guard: TransportGuard
    _body_of: tuple[int, int] | None
    _data_set_bytes: int
    _command_bytes: int
    _refused: bool

    @classmethod
    def adopt(cls, sock: AssociationSocket, guard: TransportGuard) -> GuardedAssociationSocket:
        """Make ``sock`` (not yet read from) enforce ``guard``."""
        sock.__class__ = cls
        guarded = cast(GuardedAssociationSocket, sock)
        guarded._guard = guard
        guarded._body_of = None  # (PDU type, length) while the next read is a PDU body
        guarded._data_set_bytes = 0
        guarded._command_bytes = 0
        guarded._refused = False
        return guarded

    def recv(self, nr_bytes: int) -> bytearray:
        """Read as pynetdicom's DUL asks: a PDU header, then that PDU's body."""
        if self._refused:
            return bytearray()  # the DUL sees a closed connection (Evt17)
        try:
            if self._body_of is None:
                data = super().recv(nr_bytes)
                if nr_bytes == PDU_HEADER.size and len(data) == PDU_HEADER.size:
                    self._check_header(bytes(data))
                return data
            pdu_type, _ = self._body_of
            self._body_of = None
            data = super().recv(nr_bytes)
        except TimeoutError:
            self._refuse(
                TransportRefusal.STALLED_PDU,
                f"no data for {self._guard.read_timeout_s:g} s in the middle of a PDU "
                "(node.network_timeout_s)",
            )
            return bytearray()
        if pdu_type == PduType.P_DATA_TF and len(data) == nr_bytes:
            self._count_fragments(data)
        return data

    def _check_header(self, header: bytes) -> None:
        pdu_type, _, length = PDU_HEADER.unpack(header)
        try:
            kind = PduType(pdu_type)
        except ValueError:
            return  # the DUL refuses an unknown type itself (Evt19) and reads no body
        limit = self._guard.limits.max_pdu_bytes
        if length > limit:
            self._refuse(
                TransportRefusal.PDU_TOO_LARGE,
                f"{kind.name} PDU announces {length} bytes, above limits.max_pdu_bytes {limit}",
            )
            return
        self._body_of = (kind, length)

    def _count_fragments(self, body: bytearray) -> None:
        """Add up one message's fragments across P-DATA-TF PDUs (PS3.8 9.3.5.1, E.2)."""
        offset = 0
        while offset < len(body):
            if offset + PDV_HEADER.size > len(body):
                self._refuse(TransportRefusal.MALFORMED_P_DATA, "P-DATA-TF ends inside a PDV")
                return
            item_length, _, control = PDV_HEADER.unpack_from(body, offset)
            fragment = item_length - 2  # the item length includes context ID and control byte
            if fragment < 0 or offset + 4 + item_length > len(body):
                self._refuse(
                    TransportRefusal.MALFORMED_P_DATA,
                    f"P-DATA-TF holds a PDV item of length {item_length} at byte {offset} of "
                    f"{len(body)} (at least 2, and within the PDU)",
                )
                return
            offset += 4 + item_length
            last = bool(control & _LAST_FRAGMENT_BIT)
            if control & _COMMAND_BIT:
                self._command_bytes += fragment
                if self._command_bytes > MAX_COMMAND_SET_BYTES:
                    self._refuse(
                        TransportRefusal.COMMAND_SET_TOO_LARGE,
                        f"command set of more than {MAX_COMMAND_SET_BYTES} bytes",
                    )
                    return
                if last:
                    self._command_bytes = 0
            else:
                self._data_set_bytes += fragment
                limit = self._guard.limits.max_instance_bytes
                if self._data_set_bytes > limit:
                    self._refuse(
                        TransportRefusal.DATA_SET_TOO_LARGE,
                        f"data set of one message passes {self._data_set_bytes} bytes, above "
                        f"limits.max_instance_bytes {limit}",
                    )
                    return
                if last:
                    self._data_set_bytes = 0

    def _refuse(self, reason: TransportRefusal, detail: str) -> None:
        """Send an A-ABORT, close the connection, log and count why."""
        self._refused = True
        logger.warning(
            "aborting connection from %s: %s; nothing more is read from it",
            _describe_peer(self.assoc),
            detail,
        )
        requestor = self.assoc.requestor
        self._guard.on_refused(
            reason, f"{requestor.address}:{requestor.port}", _calling_ae(self.assoc), detail
        )
        abort = A_ABORT_RQ()
        abort.source = AbortSource.SERVICE_PROVIDER
        abort.reason_diagnostic = AbortReason.INVALID_PDU_PARAMETER_VALUE
        raw = self.socket
        if raw is None:
            return
        # The peer may not be reading (it is busy sending): closing is what matters.
        with contextlib.suppress(OSError):
            raw.settimeout(_ABORT_SEND_TIMEOUT_S)
            raw.sendall(abort.encode())
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler plus the TLS handshake and the transport guard."""

    server: GuardedAssociationServer

    def handle(self) -> None:
        """Finish the TLS handshake (if any), then run the association as pynetdicom does."""
        if isinstance(self.request, ssl.SSLSocket) and not self._handshake(self.request):
            return
        self.request.settimeout(self.server.guard.read_timeout_s)
        assoc = self._create_association()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        GuardedAssociationSocket.adopt(cast(AssociationSocket, assoc.dul.socket), self.server.guard)
        return assoc

    def _handshake(self, tls_socket: ssl.SSLSocket) -> bool:
        guard = self.server.guard
        host, port = self.client_address[0], self.client_address[1]
        try:
            tls_socket.settimeout(guard.handshake_timeout_s)
            tls_socket.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            hint = _HANDSHAKE_HINTS.get(str(reason), "")
            if isinstance(exc, TimeoutError):
                hint = f": no handshake within {guard.handshake_timeout_s:g} s"
            logger.warning(
                "TLS handshake with %s:%d failed (%s%s); connection closed",
                host,
                port,
                reason,
                hint,
            )
            guard.on_tls_failure(f"{host}:{port}", f"TLS handshake failed: {reason}{hint}")
            self.server.shutdown_request(tls_socket)
            return False
        # getpeercert()["subject"] is a tuple of RDNs, each a tuple of (key, value) pairs (ssl
        # docs); typeshed types every certificate field as str | tuple.
        rdns = cast(
            "tuple[tuple[tuple[str, str], ...], ...]",
            (tls_socket.getpeercert() or {}).get("subject", ()),
        )
        subject = dict(item for rdn in rdns for item in rdn)
        logger.debug(
            "TLS %s with %s:%d, client certificate %s",
            tls_socket.version(),
            host,
            port,
            subject.get("commonName", "none"),
        )
        return True


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with :class:`GuardedRequestHandler` and a lazy TLS wrap.

    Parameters
    ----------
    guard:
        The limits and callbacks every connection gets.
    args, kwargs:
        As for :class:`~pynetdicom.transport.ThreadedAssociationServer`.
    """

    def __init__(self, *args: Any, guard: TransportGuard, **kwargs: Any) -> None:
        self.guard = guard
        #: The thread running ``serve_forever`` (set by :func:`start_server`).
        self.serve_thread: threading.Thread | None = None
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection; with TLS wrap it but leave the handshake to its own thread."""
        listening = cast(socket.socket, self.socket)
        client_socket, address = listening.accept()
        if self.ssl_context:
            client_socket = self.ssl_context.wrap_socket(
                client_socket, server_side=True, do_handshake_on_connect=False
            )
        return client_socket, address

    @property
    def is_serving(self) -> bool:
        """Whether the accept loop runs and its socket is open (for ``/healthz``)."""
        thread = self.serve_thread
        listening = cast(socket.socket, self.socket)
        return thread is not None and thread.is_alive() and listening.fileno() != -1
