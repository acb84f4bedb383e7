"""Header rewriting between client and backend (RFC 9110 §7.6.1, RFC 9112).

A proxy must not forward hop-by-hop fields: `Connection`, every field that
`Connection` names, and the fixed list below. Framing (`Transfer-Encoding`)
is hop-by-hop too: the proxy re-frames each side itself.
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        # Trailer announces trailer fields; the proxy re-chunks and does not
        # forward trailers, so the announcement would be a lie.
        b"trailer",
    }
)

#: Fields the proxy sets itself; a client's own copies are kept only from trusted peers.
FORWARDED = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-server",
        b"x-real-ip",
    }
)

_CRLF = b"\r\n"
_SEP = b": "


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


class ForwardedBy:
    """What the proxy says about itself and the client, fixed per client connection."""

    __slots__ = ("client_ip", "proto", "port", "server", "trusted")

    def __init__(self, client_ip: str, proto: str, port: int, server: str, trusted: bool) -> None:
        self.client_ip = client_ip.encode()
        self.proto = proto.encode()
        self.port = str(port).encode()
        self.server = server.encode()
        self.trusted = trusted


def request_head(
    method: bytes,
    target: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    host: bytes,
    by: ForwardedBy,
    chunked: bool,
) -> bytes:
    """The request head to send upstream, as HTTP/1.1 over a keep-alive connection.

    The Host field passes through unchanged (Traefik's passHostHeader).
    """
    out = [b"%s %s HTTP/1.1\r\n" % (method, target)]
    named: set[bytes] = set()
    incoming: dict[bytes, bytes] = {}
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection":
                named |= _connection_tokens(value)
            continue
        if lname in FORWARDED:
            if by.trusted:
                previous = incoming.get(lname)
                incoming[lname] = value if previous is None else previous + b", " + value
            continue
        out.append(name)
        out.append(_SEP)
        out.append(value)
        out.append(_CRLF)
    if named - {b"close", b"keep-alive"}:
        out = _drop_named(out, named)
    xff = incoming.get(b"x-forwarded-for")
    out.append(b"X-Forwarded-For: ")
    out.append(by.client_ip if xff is None else xff + b", " + by.client_ip)
    out.append(b"\r\nX-Forwarded-Host: ")
    out.append(incoming.get(b"x-forwarded-host", host))
    out.append(b"\r\nX-Forwarded-Port: ")
    out.append(incoming.get(b"x-forwarded-port", by.port))
    out.append(b"\r\nX-Forwarded-Proto: ")
    out.append(incoming.get(b"x-forwarded-proto", by.proto))
    out.append(b"\r\nX-Forwarded-Server: ")
    out.append(by.server)
    out.append(b"\r\nX-Real-Ip: ")
    out.append(incoming.get(b"x-real-ip", by.client_ip))
    out.append(b"\r\nTransfer-Encoding: chunked\r\n\r\n" if chunked else b"\r\n\r\n")
    return b"".join(out)


def response_head(
    status: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    *,
    keep_content_length: bool,
    chunked: bool,
    connection: bytes,
) -> bytes:
    """The response head for the client.

    `connection` is the complete Connection line to add (or b"");
    `chunked` adds Transfer-Encoding: chunked because the proxy re-chunks.
    """
    out = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    named: set[bytes] = set()
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection":
                named |= _connection_tokens(value)
            continue
        if lname == b"content-length" and not keep_content_length:
            continue
        out.append(name)
        out.append(_SEP)
        out.append(value)
        out.append(_CRLF)
    if named - {b"close", b"keep-alive"}:
        out = _drop_named(out, named)
    if chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    out.append(connection)
    out.append(_CRLF)
    return b"".join(out)


def _drop_named(parts: list[bytes], named: set[bytes]) -> list[bytes]:
    """Remove the fields a Connection header named (RFC 9110 §7.6.1).

    `parts` is [start line, name, ": ", value, CRLF, ...]. This is the rare
    case, so it rebuilds the list rather than slowing down the common one.
    """
    kept = parts[:1]
    for i in range(1, len(parts), 4):
        if parts[i].lower() not in named:
            kept.extend(parts[i : i + 4])
    return kept
