"""Header rewriting between client and backend (RFC 9110 §7.6.1, RFC 9112).

A proxy must not forward hop-by-hop fields: `Connection`, every field that
`Connection` names, and the fixed list below. Framing (`Transfer-Encoding`)
is hop-by-hop too: the proxy re-frames each side itself.

Fields are filtered as the parser reports them, with at most one set lookup
per field (none for a name whose length no special name has), and kept as a
flat list of byte strings (name, ": ", value, CRLF, ...) that is joined once
into the outgoing head. This is the hottest code in a worker, so it trades a
little elegance for fewer Python calls.
"""

from __future__ import annotations

from collections.abc import Collection
from http import HTTPStatus
from typing import Final

HOP_BY_HOP: Final = frozenset(
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
FORWARDED: Final = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-server",
        b"x-real-ip",
    }
)

#: Request fields that need more than copying (Content-Length is copied *and*
#: remembered; Host is remembered and sent first).
REQUEST_SPECIAL: Final = HOP_BY_HOP | FORWARDED | {b"host", b"content-length"}
#: Response fields that need more than copying.
RESPONSE_SPECIAL: Final = HOP_BY_HOP | {b"content-length"}


def _length_bits(names: frozenset[bytes]) -> int:
    bits = 0
    for name in names:
        bits |= 1 << len(name)
    return bits


#: The lengths of their names, as bits: bit n is set if one has n bytes, so
#: `LENGTHS >> len(name) & 1` tests a name with two machine operations. A field
#: name of another length (Date, Server, Content-Type, Accept: most fields)
#: cannot be special, so it is copied without lower-casing it into a new bytes
#: object and hashing that, which cost more than the rest of a header callback.
REQUEST_SPECIAL_LENGTHS: Final = _length_bits(REQUEST_SPECIAL)
RESPONSE_SPECIAL_LENGTHS: Final = _length_bits(RESPONSE_SPECIAL)

#: The line end of HTTP/1.1 (RFC 9112 §2.2).
CRLF: Final = b"\r\n"
#: Connection values that name no other field, so nothing more must be removed.
_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close", b""})
#: Fields a Connection header may name but never remove: they frame or route the
#: message, which the proxy does by them whatever the sender says. Dropping
#: Content-Length while forwarding the body it delimits would let the body be
#: read as a second request (smuggling); dropping Host would strip the route.
_NEVER_NAMED: Final = _PLAIN_CONNECTION | {b"host", b"content-length", b"transfer-encoding"}


def connection_tokens(value: bytes, named: set[bytes] | None) -> set[bytes] | None:
    """Add the field names a Connection header lists to `named` (None if it names none)."""
    if value in _PLAIN_CONNECTION:
        return named  # as most senders write it: no strip() or lower() needed
    value = value.strip().lower()
    if value in _PLAIN_CONNECTION:
        return named
    tokens = {t.strip() for t in value.split(b",")} - _NEVER_NAMED
    return tokens if named is None else named | tokens


def add_field(fields: list[bytes], name: bytes, value: bytes) -> None:
    """Append a field to a flat field list: name, ": ", value, CRLF.

    Four appends rather than `fields += (...)`, which would allocate and free
    a tuple for every header of every message.
    """
    fields.append(name)
    fields.append(b": ")
    fields.append(value)
    fields.append(CRLF)


def drop_named(parts: list[bytes], named: Collection[bytes]) -> list[bytes]:
    """The flat field list without the fields whose lower-case names are in `named`.

    Used for the fields a Connection header names (RFC 9110 §7.6.1), and for
    trailers, which may not carry framing, routing or hop-by-hop fields
    (RFC 9110 §6.5.1).
    """
    kept = []
    for i in range(0, len(parts), 4):
        if parts[i].lower() not in named:
            kept.extend(parts[i : i + 4])
    return kept


# The forwarded fields in two parts around X-Forwarded-Host's value, which is
# the request's Host: the only one of them that changes between the requests
# of an untrusted client's connection.
_FORWARDED_TO_HOST: Final = b"X-Forwarded-For: %s\r\nX-Forwarded-Host: "
_FORWARDED_AFTER_HOST: Final = (
    b"\r\nX-Forwarded-Port: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Server: %s\r\n"
    b"X-Real-Ip: %s\r\n"
)


class ForwardedBy:
    """What the forwarded fields say about the proxy and one client, and the
    last request fields rendered for it.

    The same for every connection of a client IP to an entry point, which
    keeps one per IP (EntryPointRuntime.forwarded_by): rendering them costs
    more than the rest of accepting a connection. For an untrusted peer only
    the Host varies from request to request, so they are rendered around it.

    A client usually sends the same fields, Host aside, on every request:
    comparing them with the last request's costs less than joining them
    again. Kept per IP rather than per connection, the last rendering costs
    no memory per connection (0.2 to 1 KB each, with the fields it holds).
    """

    __slots__ = (
        "ip",
        "client_ip",
        "proto",
        "port",
        "server",
        "trusted",
        "to_host",
        "after_host",
        "fields",
        "rendered",
    )

    def __init__(self, client_ip: str, proto: str, port: int, server: str, trusted: bool) -> None:
        self.ip = client_ip
        self.client_ip = client_ip.encode()
        self.proto = proto.encode()
        self.port = str(port).encode()
        self.server = server.encode()
        self.trusted = trusted
        self.to_host = _FORWARDED_TO_HOST % self.client_ip
        self.after_host = _FORWARDED_AFTER_HOST % (
            self.port,
            self.proto,
            self.server,
            self.client_ip,
        )
        #: The last request's fields rendered without trusted X-Forwarded-* values,
        #: and what they rendered to, with the forwarded fields up to Host's value.
        self.fields: list[bytes] | None = None
        self.rendered = b""


def request_head(
    method: bytes,
    target: bytes,
    fields: list[bytes],
    host: bytes,
    by: ForwardedBy,
    incoming: dict[bytes, bytes] | None,
    chunked: bool,
    upgrade: bytes | None = None,
) -> bytes:
    """The request head to send upstream, as HTTP/1.1 over a keep-alive connection.

    `host` is the client's Host, passed through unchanged (Traefik's
    passHostHeader) and sent first, as Traefik does. It is not among `fields`,
    the client's other end-to-end fields: so these are usually the same from
    one request of a connection to the next even when the Host changes, and
    their rendering is reused. A request without Host (HTTP/1.0 only) is sent
    with an empty one, which HTTP/1.1 requires (RFC 9112 §3.2).
    `by` holds the client's previous rendering, reused or replaced.
    `incoming` holds the X-Forwarded-* values of a trusted peer, which are
    kept or appended to. `upgrade` is the protocol a client asks to switch to
    (RFC 9110 §7.8): Upgrade and Connection are hop-by-hop, so they are sent
    anew, and X-Forwarded-Proto says `ws`, as Traefik does.
    """
    if upgrade is not None:
        incoming = {b"x-forwarded-proto": b"ws", **(incoming or {})}
    if incoming is None:
        if fields == by.fields:
            rendered = by.rendered
        else:
            rendered = b"".join(fields) + by.to_host
            by.fields, by.rendered = fields, rendered
        forwarded_host = host
        after_host = by.after_host
    else:
        xff = incoming.get(b"x-forwarded-for")
        rendered = b"".join(fields) + _FORWARDED_TO_HOST % (
            by.client_ip if xff is None else xff + b", " + by.client_ip
        )
        forwarded_host = incoming.get(b"x-forwarded-host", host)
        after_host = _FORWARDED_AFTER_HOST % (
            incoming.get(b"x-forwarded-port", by.port),
            incoming.get(b"x-forwarded-proto", by.proto),
            by.server,
            incoming.get(b"x-real-ip", by.client_ip),
        )
    # join, not %-formatting: bytes formatting parses its template on every call.
    return b"".join(
        (
            method,
            b" ",
            target,
            b" HTTP/1.1\r\nHost: ",
            host,
            CRLF,
            rendered,
            forwarded_host,
            after_host,
            b"Transfer-Encoding: chunked\r\n" if chunked else b"",
            b"" if upgrade is None else b"Connection: Upgrade\r\nUpgrade: %s\r\n" % upgrade,
            CRLF,
        )
    )


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""  # RFC 9112 §4: the reason phrase may be empty
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


# The backend's reason phrase is not relayed: clients must ignore it
# (RFC 9112 §4), and a fixed status line per code is one lookup.
_STATUS_LINES: Final = {status: _status_line(status) for status in range(100, 600)}


def response_head(status: int, fields: list[bytes], chunked: bool, connection: bytes) -> bytes:
    """The response head for the client, made in `fields`, which it uses up.

    `connection` is the complete Connection line to add (or b"");
    `chunked` adds Transfer-Encoding: chunked because the proxy re-chunks.
    The head is joined once, status line and all: joining the fields first,
    then the parts around them, cost 400 instructions more per response.
    """
    fields.insert(0, _STATUS_LINES[status])
    if chunked:
        fields.append(b"Transfer-Encoding: chunked\r\n")
    if connection:
        fields.append(connection)
    fields.append(CRLF)
    return b"".join(fields)
