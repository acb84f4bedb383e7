"""Fuzz portside's request path with random and mutated HTTP/1.x requests.

Usage: python tests/fuzz_proxy.py [--seconds N] [--seed S] [--threads T]

Portside (two workers) runs in front of `StrictBackend`, a recording backend
that parses every byte it receives with a strict HTTP/1.1 parser of its own.
Many client threads send requests taken from a corpus of valid and tricky
requests (smuggling variants, obs-fold, odd chunk sizes, huge headers,
pipelining, Upgrade, absolute-form, NULs, bare CR/LF), mutated by byte flips,
insertions, truncations, duplications and splices, and split into random
pieces. After sending, a client half-closes its connection; the proxy must
then answer and close within HANG_TIMEOUT seconds.

Findings, any of which makes the exit status non-zero:

- crash: a worker pid changed, or the portside log says Traceback,
  'internal error' or 'restarting';
- hang: a connection neither closed nor was closed within HANG_TIMEOUT
  after the client half-closed;
- bad-response: the bytes the client got are not a sequence of complete
  HTTP responses;
- desync: the backend received bytes that are not a well-formed request
  (bad framing, two Host fields, Transfer-Encoding other than chunked,
  Content-Length with Transfer-Encoding, a hop-by-hop field, bytes after a
  request that do not start another one);
- orphan: the backend answered a request whose response reached no client
  (the signature of a smuggled request: its answer arrives on a pooled
  connection the proxy believes idle).

Randomness comes from one seed, printed at start; `--seed` replays a run
(thread interleaving aside).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from raw_backend import ThreadedBackend  # noqa: E402 - found through the path above

HOST = b"fuzz.localhost"
HANG_TIMEOUT = 5.0
LIMITS = """
[entryPoints.web.limits]
maxUriBytes = 2048
maxHeaderBytes = 8192
maxHeaderFields = 50
maxBodyBytes = 65536
[entryPoints.web.transport.respondingTimeouts]
readHeaderTimeout = "3s"
"""

# -- a strict HTTP/1.1 request parser (what the backend must receive) -----------

_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_REQUEST_LINE = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^\x00-\x20\x7f]+) HTTP/1\.1$")
_HEX = re.compile(rb"^[0-9a-fA-F]{1,16}$")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_NEVER_FORWARDED = {b"keep-alive", b"proxy-connection", b"te", b"trailer"}
_NOT_IN_TRAILERS = {b"host", b"content-length", b"transfer-encoding", b"connection"}


_CASE_UID = re.compile(rb"/fz/(\d+\.\d+\.[g-z]{6})-")


class Malformed(Exception):
    """The bytes at hand are not (the start of) a well-formed request."""


@dataclass
class BackendRequest:
    """One well-formed request as the backend received it."""

    seq: int
    connection: int
    method: bytes
    target: bytes
    fields: list[tuple[bytes, bytes]]
    body: bytes  # decoded
    trailers: list[tuple[bytes, bytes]]
    chunked: bool
    raw: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.fields if n.lower() == name]


def _parse_field(line: bytes) -> tuple[bytes, bytes]:
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.match(name):
        raise Malformed(f"bad field line {line[:80]!r}")
    if _BAD_VALUE.search(value):
        raise Malformed(f"CR, LF or NUL in field value {line[:80]!r}")
    return name, value.strip(b" \t")


def parse_request(buf: bytes, start: int = 0) -> tuple[dict, int] | None:
    """Parse one request strictly from buf[start:].

    Returns (parts, end) or None if more bytes are needed; raises Malformed.
    """
    head_end = buf.find(b"\r\n\r\n", start)
    if head_end < 0:
        _check_partial_head(buf[start:])
        return None
    lines = buf[start:head_end].split(b"\r\n")
    for line in lines:
        if b"\n" in line or b"\r" in line:
            raise Malformed(f"bare CR or LF in head line {line[:80]!r}")
    m = _REQUEST_LINE.match(lines[0])
    if not m:
        raise Malformed(f"bad request line {lines[0][:120]!r}")
    method, target = m.groups()
    if not (target.startswith(b"/") or target == b"*"):
        raise Malformed(f"target not in origin form {target[:80]!r}")
    fields = [_parse_field(line) for line in lines[1:]]
    names = [n.lower() for n, _ in fields]
    if names.count(b"host") != 1:
        raise Malformed(f"{names.count(b'host')} Host fields")
    for name in names:
        if name in _NEVER_FORWARDED:
            raise Malformed(f"hop-by-hop field {name!r} forwarded")
    connection = [v for n, v in fields if n.lower() == b"connection"]
    if connection and (connection != [b"Upgrade"] or b"upgrade" not in names):
        raise Malformed(f"Connection field forwarded: {connection!r}")
    if b"upgrade" in names and not connection:
        raise Malformed("Upgrade without Connection: Upgrade")
    if names.count(b"x-forwarded-server") != 1:
        # The proxy renders every head it sends with its X-Forwarded-* fields: a
        # request without them was not rendered by the proxy (smuggled in a body).
        raise Malformed("request not rendered by the proxy (no X-Forwarded-Server)")
    te = [v for n, v in fields if n.lower() == b"transfer-encoding"]
    cl = [v for n, v in fields if n.lower() == b"content-length"]
    if te and cl:
        raise Malformed("Content-Length together with Transfer-Encoding")
    if len(te) > 1 or (te and te[0] != b"chunked"):
        raise Malformed(f"Transfer-Encoding {te!r}")
    if len(cl) > 1 or (cl and not cl[0].isdigit()):
        raise Malformed(f"Content-Length {cl!r}")
    pos = head_end + 4
    trailers: list[tuple[bytes, bytes]] = []
    if te:
        body = bytearray()
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if len(buf) - pos > 18 or not re.match(rb"^[0-9a-fA-F]*\r?$", buf[pos:]):
                    raise Malformed(f"bad chunk size line {buf[pos : pos + 40]!r}")
                return None
            size_line = buf[pos:eol]
            if not _HEX.match(size_line):
                raise Malformed(f"bad chunk size line {size_line[:40]!r}")
            size = int(size_line, 16)
            pos = eol + 2
            if size == 0:
                while True:  # trailer section
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        _check_partial_head(buf[pos:])
                        return None
                    line = buf[pos:eol]
                    pos = eol + 2
                    if not line:
                        break
                    if b"\r" in line or b"\n" in line:
                        raise Malformed(f"bare CR or LF in trailer {line[:80]!r}")
                    name, value = _parse_field(line)
                    if name.lower() in _NOT_IN_TRAILERS:
                        raise Malformed(f"framing field {name!r} in trailers")
                    trailers.append((name, value))
                break
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos : pos + size]
            if buf[pos + size : pos + size + 2] != b"\r\n":
                raise Malformed("chunk data not followed by CRLF")
            pos += size + 2
        body = bytes(body)
    else:
        length = int(cl[0]) if cl else 0
        if len(buf) < pos + length:
            return None
        body = buf[pos : pos + length]
        pos += length
    parts = {
        "method": method,
        "target": target,
        "fields": fields,
        "body": body,
        "trailers": trailers,
        "chunked": bool(te),
        "raw": buf[start:pos],
    }
    return parts, pos


def _check_partial_head(partial: bytes) -> None:
    """A head not complete yet must at least be a plausible beginning."""
    if not partial:
        return
    first = partial.split(b"\r\n", 1)[0]
    method = first.split(b" ", 1)[0]
    if method and not _TOKEN.match(method):
        raise Malformed(f"garbage where a request should start: {partial[:80]!r}")
    rest = partial.replace(b"\r\n", b"")
    if rest.endswith(b"\r"):
        rest = rest[:-1]
    if b"\x00" in rest or b"\r" in rest or b"\n" in rest:
        raise Malformed(f"bare CR/LF or NUL in a partial head: {partial[:80]!r}")


# -- the recording backend ------------------------------------------------------


def echo_body(method: bytes, target: bytes, body: bytes) -> bytes:
    """What the backend answers: enough to check the request arrived intact."""
    return b"%s %s %d %s" % (method, target, len(body), hashlib.sha256(body).hexdigest().encode())


@dataclass
class StrictBackend(ThreadedBackend):
    """A threaded backend on 127.0.0.1 that parses what it receives strictly.

    Every well-formed request is recorded and answered with 200, an
    `X-Seq` header and `echo_body()` (Content-Length framed; a HEAD gets
    Content-Length: 0). A target containing `/chunked-resp` is answered
    chunked with a trailer, `/close-resp` close-delimited, `/slow-resp`
    after 0.3 s. Bytes that are
    not a well-formed request are recorded in `desyncs` and the connection
    is closed.
    """

    received: list[BackendRequest] = field(default_factory=list)
    desyncs: list[tuple[int, str, bytes]] = field(default_factory=list)
    truncated: int = 0
    #: Keep at most this many bytes of each recorded body and raw request (long runs).
    record_limit: int | None = None

    def __post_init__(self) -> None:
        self._seq = 0
        #: Fuzz case uid (from a /fz/<uid>-<i> target) -> seqs of its requests.
        self.by_case: dict[str, list[int]] = {}
        self._listen(backlog=512)

    def by_seq(self, seq: int) -> BackendRequest:
        with self._lock:
            return next(r for r in self.received if r.seq == seq)

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        pos = 0
        with conn:
            while True:
                try:
                    parsed = parse_request(buf, pos)
                except Malformed as exc:
                    with self._lock:
                        self.desyncs.append((number, str(exc), buf[max(0, pos - 200) :]))
                    return
                if parsed is None:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        if pos < len(buf):
                            with self._lock:
                                self.truncated += 1
                        return
                    buf = buf[pos:] + data
                    pos = 0
                    continue
                parts, pos = parsed
                if b"/slow-resp" in parts["target"]:
                    time.sleep(0.3)
                with self._lock:
                    self._seq += 1
                    request = BackendRequest(self._seq, number, **parts)
                    if self.record_limit is not None:
                        kept = BackendRequest(self._seq, number, **parts)
                        kept.body = kept.body[: self.record_limit]
                        kept.raw = kept.raw[: self.record_limit]
                        self.received.append(kept)
                    else:
                        self.received.append(request)
                    m = _CASE_UID.search(request.target)
                    if m:
                        self.by_case.setdefault(m.group(1).decode(), []).append(request.seq)
                try:
                    conn.sendall(self._response(request))
                except OSError:
                    return
                if b"/close-resp" in request.target:
                    return

    @staticmethod
    def _response(r: BackendRequest) -> bytes:
        body = echo_body(r.method, r.target, r.body)
        if r.method == b"HEAD":
            return b"HTTP/1.1 200 OK\r\nX-Seq: %d\r\nContent-Length: 0\r\n\r\n" % r.seq
        if b"/chunked-resp" in r.target:
            return (
                b"HTTP/1.1 200 OK\r\nX-Seq: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"%x;ext=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (r.seq, len(body), body)
            )
        if b"/close-resp" in r.target:
            return b"HTTP/1.1 200 OK\r\nX-Seq: %d\r\nConnection: close\r\n\r\n%s" % (r.seq, body)
        return b"HTTP/1.1 200 OK\r\nX-Seq: %d\r\nContent-Length: %d\r\n\r\n%s" % (
            r.seq,
            len(body),
            body,
        )


# -- reading responses -------------------------------------------------------------


@dataclass
class ParsedResponse:
    status: int
    fields: list[tuple[bytes, bytes]]
    body: bytes
    trailers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.fields:
            if n.lower() == name:
                return v
        return None


class BadResponse(Exception):
    pass


def parse_responses(data: bytes, closed: bool = True) -> tuple[list[ParsedResponse], bytes]:
    """Split a client's received bytes into responses; returns (responses, leftover).

    Every response must be framed by Content-Length, chunked or (last one
    only, `closed`) the close. HEAD-ness is not known here (mutated requests
    have no reliable boundaries): the backend answers HEAD with
    Content-Length: 0, and a response to HEAD from the proxy itself, which
    has a Content-Length but no body (RFC 9110 §9.3.2), is recognised by what
    follows its head: the next response, or the end of a closed connection.
    """
    responses = []
    pos = 0
    while pos < len(data):
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return responses, data[pos:]
        lines = data[pos:head_end].split(b"\r\n")
        m = re.match(rb"^HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?$", lines[0])
        if not m:
            raise BadResponse(f"bad status line {lines[0][:80]!r}")
        status = int(m.group(1))
        fields = []
        for line in lines[1:]:
            try:
                fields.append(_parse_field(line))
            except Malformed as exc:
                raise BadResponse(str(exc)) from None
        lowered = {n.lower(): v for n, v in fields}
        body_start = head_end + 4
        trailers: list[tuple[bytes, bytes]] = []
        if 100 <= status < 200 or status in (204, 304):
            body, pos = b"", body_start
        elif lowered.get(b"transfer-encoding", b"").lower() == b"chunked":
            out = bytearray()
            p = body_start
            while True:
                eol = data.find(b"\r\n", p)
                if eol < 0:
                    return responses, data[pos:]
                size = int(data[p:eol].split(b";")[0], 16)
                p = eol + 2
                if size == 0:
                    end = data.find(b"\r\n\r\n", p - 2)
                    if end < 0:
                        return responses, data[pos:]
                    for line in data[p : end + 2].split(b"\r\n"):
                        if line:
                            trailers.append(_parse_field(line))
                    p = end + 4
                    break
                if len(data) < p + size + 2:
                    return responses, data[pos:]
                out += data[p : p + size]
                if data[p + size : p + size + 2] != b"\r\n":
                    raise BadResponse("chunk data not followed by CRLF")
                p += size + 2
            body, pos = bytes(out), p
        elif b"content-length" in lowered:
            length = int(lowered[b"content-length"])
            if length and (
                data.startswith(b"HTTP/1.", body_start) or (closed and len(data) == body_start)
            ):
                body, pos = b"", body_start  # a response to HEAD
            elif len(data) < body_start + length:
                return responses, data[pos:]
            else:
                body, pos = data[body_start : body_start + length], body_start + length
        else:
            if not closed:
                return responses, data[pos:]
            body, pos = data[body_start:], len(data)
        responses.append(ParsedResponse(status, fields, body, trailers))
    return responses, b""


# -- the corpus ----------------------------------------------------------------------

CRLF = b"\r\n"
TE = b"Transfer-Encoding: chunked\r\n"


def _get(extra: bytes = b"", method: bytes = b"GET", version: bytes = b"1.1") -> bytes:
    return method + b" {p} HTTP/" + version + b"\r\nHost: fuzz.localhost\r\n" + extra + CRLF


def _post(extra: bytes, body: bytes, method: bytes = b"POST") -> bytes:
    return method + b" {p} HTTP/1.1\r\nHost: fuzz.localhost\r\n" + extra + CRLF + body


SMUGGLED = b"GET /smuggled{p} HTTP/1.1\r\nHost: fuzz.localhost\r\n\r\n"
SMUGGLED_FIXED = b"GET /smuggled HTTP/1.1\r\nHost: fuzz.localhost\r\n\r\n"

CORPUS: list[bytes] = [
    _get(),
    _get(method=b"HEAD"),
    _get(method=b"OPTIONS"),
    _get(method=b"DELETE"),
    _get(version=b"1.0"),
    _get(b"Connection: keep-alive\r\n", version=b"1.0"),
    b"GET {p} HTTP/1.0\r\n\r\n",
    _get(b"Connection: close\r\n"),
    _get(b"Connection: X-Secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n"),
    _get(b"Proxy-Connection: keep-alive\r\nTrailer: X-Sum\r\n"),
    b"GET {p} HTTP/1.1\r\nHost: nowhere.localhost\r\n\r\n",
    b"HEAD {p} HTTP/1.1\r\nHost: nowhere.localhost\r\n\r\n",
    b"GET http://fuzz.localhost{p}?q=1 HTTP/1.1\r\nHost: fuzz.localhost\r\n\r\n",
    b"GET http://fuzz.localhost:80{p} HTTP/1.1\r\nHost: fuzz.localhost\r\n\r\n",
    b"GET http://evil.localhost{p} HTTP/1.1\r\nHost: fuzz.localhost\r\n\r\n",
    b"GET http://user@fuzz.localhost{p} HTTP/1.1\r\nHost: fuzz.localhost\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: fuzz.localhost\r\n\r\n",
    _get(b"X-Forwarded-For: 1.2.3.4\r\nX-Real-Ip: 1.2.3.4\r\n"),
    _get(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"),
    _get(b"Upgrade: websocket\r\nConnection: Upgrade\r\n") + b"\x81\x05hello",
    _get(b"Upgrade: h2c\r\n"),
    _get(b"Expect: 100-continue\r\nContent-Length: 5\r\n") + b"hello",
    _post(b"Content-Length: 5\r\n", b"hello"),
    _post(b"Content-Length: 0\r\n", b""),
    _post(b"Content-Length: 11\r\n", b"hello world"),
    _post(b"Content-Length: 40\r\n", SMUGGLED[:40]),
    _post(b"Content-Length: 0\r\n", SMUGGLED),
    _post(TE, b"5\r\nhello\r\n0\r\n\r\n"),
    _post(TE, b'5;a=b;c="d"\r\nhello\r\n0;x\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n'),
    _post(TE, b"A\r\n0123456789\r\n1\r\n!\r\n0\r\n\r\n"),
    _post(TE, b"0\r\n\r\n" + SMUGGLED),
    _post(TE, b"0\r\nHost: evil\r\nContent-Length: 5\r\n\r\n"),
    _post(b"Content-Length: 5\r\n" + TE, b"0\r\n\r\n" + SMUGGLED),
    _post(
        b"Connection: content-length\r\nContent-Length: %d\r\n" % len(SMUGGLED_FIXED),
        SMUGGLED_FIXED,
    ),
    _post(
        b"Connection: transfer-encoding\r\n" + TE,
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED_FIXED), SMUGGLED_FIXED),
    ),
    _get(b"Connection: host\r\n"),
    _get(b"Connection: Host, X-Forwarded-For, Content-Length\r\n"),
    _post(TE + b"Content-Length: 50\r\n", b"0\r\n\r\n" + SMUGGLED),
    _post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
    _post(b"Transfer-Encoding: identity, chunked\r\n", b"0\r\n\r\n"),
    _post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
    _post(b"Transfer-Encoding:\tchunked\r\n", b"0\r\n\r\n"),
    _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    _post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
    _post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
    _post(b"X-A: b\r\n\tfold\r\nContent-Length: 3\r\n", b"abc"),
    _post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"),
    _post(b"Content-Length: 3, 3\r\n", b"abc"),
    _post(b"Content-Length: 03\r\n", b"abc"),
    _post(b"Content-Length: 99999999999999999999\r\n", b"abc"),
    _post(b"Content-Length: 70000\r\n", b"x" * 100),
    _post(TE, b"ffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
    _post(TE, b"1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"),
    _post(TE, b"0x5\r\nhello\r\n0\r\n\r\n"),
    _post(TE, b" 5\r\nhello\r\n0\r\n\r\n"),
    _post(TE, b"5 \r\nhello\r\n0\r\n\r\n"),
    _post(TE, b"5\nhello\n0\n\n"),
    _post(TE, b"5\r\nhelloXX0\r\n\r\n"),
    _post(TE, b"5\r\nhello\r\n0\r\n"),
    _post(TE, b"10000\r\n" + b"y" * 65536 + b"\r\n1\r\nz\r\n0\r\n\r\n"),
    _get(b"X-Nul: a\x00b\r\n"),
    _get(b"X-Cr: a\rb\r\n"),
    b"GET {p} HTTP/1.1\nHost: fuzz.localhost\n\n",
    b"GET {p} HTTP/1.1\r\nHost: fuzz.localhost\r\nHost: other\r\n\r\n",
    b"GET {p} HTTP/1.1\r\n\r\n",
    b"GET {p} HTTP/1.1\r\nHost: fuzz.localhost\r\n",
    b"GET  {p} HTTP/1.1\r\nHost: fuzz.localhost\r\n\r\n",
    b"GET {p} HTTP/2.0\r\nHost: fuzz.localhost\r\n\r\n",
    b"GET {p}\r\n\r\n",
    b"\r\n\r\nGET {p} HTTP/1.1\r\nHost: fuzz.localhost\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"CONNECT fuzz.localhost:80 HTTP/1.1\r\nHost: fuzz.localhost\r\n\r\n",
    _get(b"X-Big: " + b"a" * 7000 + CRLF),
    _get(b"X-Big: " + b"a" * 9000 + CRLF),
    _get(b"".join(b"X-H%d: v\r\n" % i for i in range(45))),
    _get(b"".join(b"X-H%d: v\r\n" % i for i in range(60))),
    b"GET {p}?" + b"q" * 2100 + b" HTTP/1.1\r\nHost: fuzz.localhost\r\n\r\n",
    _get(b"X-Utf8: \xc3\xa9\xff\r\n"),
    _get(b"X-Empty:\r\nX-Ows: \t v \t\r\n"),
    b"GET {p}/chunked-resp HTTP/1.1\r\nHost: fuzz.localhost\r\n\r\n",
    _get().replace(b"{p}", b"{p}/close-resp"),
    _post(TE, b"3\r\nabc\r\n0\r\n\r\n").replace(b"{p}", b"{p}/chunked-resp"),
]

SPECIAL = [
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b":",
    b",",
    b";",
    b"0",
    b"f",
    b"\x7f",
    b"\x80",
    b"\xff",
    b"\r\n ",
    b"\r\n\r\n",
    b"chunked",
    TE,
    b"Content-Length: 0\r\n",
    b"Content-Length: 5\r\n",
    b"Host: fuzz.localhost\r\n",
    b"Connection: close\r\n",
    b"Expect: 100-continue\r\n",
    b"0\r\n\r\n",
    SMUGGLED,
]


class Mutator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def case(self, uid: str) -> bytes:
        rng = self.rng
        n = rng.choice((1, 1, 1, 2, 2, 3, 5))
        parts = []
        for i in range(n):
            raw = rng.choice(CORPUS).replace(b"{p}", f"/fz/{uid}-{i}".encode())
            parts.append(raw)
        data = b"".join(parts)
        if rng.random() < 0.85:
            for _ in range(rng.choice((1, 1, 1, 2, 3, 6))):
                data = self.mutate(data)
        return data

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        if not data:
            return rng.choice(CORPUS).replace(b"{p}", b"/fz/x")
        i = rng.randrange(len(data) + 1)
        j = min(len(data), i + rng.choice((1, 1, 2, 4, 16, 64)))
        op = rng.randrange(11)
        if op == 0:  # bit flip
            i = min(i, len(data) - 1)
            return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
        if op == 1:  # replace a byte with a special one
            return data[:i] + rng.choice(SPECIAL) + data[i + 1 :]
        if op == 2:  # insert
            return data[:i] + rng.choice(SPECIAL) + data[i:]
        if op == 3:  # delete
            return data[:i] + data[j:]
        if op == 4:  # duplicate
            return data[:j] + data[i:j] * rng.choice((1, 2, 50)) + data[j:]
        if op == 5:  # truncate
            return data[:i]
        if op == 6:  # splice with another corpus item
            other = rng.choice(CORPUS).replace(b"{p}", b"/fz/splice")
            return data[:i] + other[rng.randrange(len(other) + 1) :]
        if op == 7:  # CRLF -> LF, or LF -> CRLF
            k = data.find(b"\r\n", i)
            if k >= 0:
                return data[:k] + rng.choice((b"\n", b"\r", b"\r\r\n", b"\n\r")) + data[k + 2 :]
            return data
        if op == 8:  # tweak a number
            m = list(re.finditer(rb"[0-9a-fA-F]+", data))
            if m:
                g = rng.choice(m)
                new = rng.choice(
                    (b"0", b"1", b"ff", b"-1", b"00000005", b"4294967296", g.group() + b"0")
                )
                return data[: g.start()] + new + data[g.end() :]
            return data
        if op == 9:  # change case
            return data[:i] + data[i:j].swapcase() + data[j:]
        # random bytes
        return data[:i] + rng.randbytes(rng.choice((1, 3, 8))) + data[i:]


# -- the run -----------------------------------------------------------------------


@dataclass
class Stats:
    cases: int = 0
    connections: int = 0
    responses: Counter = field(default_factory=Counter)
    hangs: list = field(default_factory=list)
    bad_responses: list = field(default_factory=list)
    seen_seqs: set = field(default_factory=set)
    orphan_cases: list = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_case(
    port: int,
    data: bytes,
    rng: random.Random,
    stats: Stats,
    uid: str = "",
    backend: StrictBackend | None = None,
) -> None:
    """Send `data` in random pieces, half-close, read until the proxy closes."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_TIMEOUT)
    except OSError as exc:
        with stats.lock:
            stats.errors[f"connect: {exc.__class__.__name__}"] += 1
        return
    received = bytearray()
    closed = False
    reset = False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pos = 0
        pieces = rng.choice((1, 1, 2, 3, 8))
        try:
            while pos < len(data):
                step = len(data) - pos if pieces == 1 else rng.randint(1, max(1, len(data) // 2))
                sock.sendall(data[pos : pos + step])
                pos += step
                if pieces > 1 and rng.random() < 0.3:
                    time.sleep(0.001)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the proxy may close early (a 400); what it sent is still read
        deadline = time.monotonic() + HANG_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                reset = True
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    finally:
        sock.close()
    try:
        responses, leftover = parse_responses(bytes(received), closed=closed and not reset)
    except (BadResponse, ValueError, Malformed) as exc:
        with stats.lock:
            stats.bad_responses.append((str(exc), data[:300], bytes(received[:300])))
        return
    seen = set()
    for r in responses:
        seq = r.header(b"x-seq")
        if seq is not None:
            seen.add(int(seq))
    if backend is not None and uid:
        with backend._lock:
            mine = set(backend.by_case.get(uid, ()))
        if mine - seen:
            with stats.lock:
                stats.orphan_cases.append((sorted(mine - seen), data[:600], bytes(received[:600])))
    with stats.lock:
        stats.connections += 1
        stats.seen_seqs |= seen
        for r in responses:
            stats.responses[r.status] += 1
        if not closed:
            stats.hangs.append((data[:400], bytes(received[:300])))
        elif leftover and not reset:
            stats.bad_responses.append(("incomplete response", data[:300], bytes(leftover[:300])))
        if reset:
            stats.errors["reset by proxy"] += 1


def start_portside(tmp: Path, backend: StrictBackend, workers: int = 2):
    from conftest import Portside, lb_config

    proxy = Portside(tmp, workers=workers, extra_static=LIMITS)
    proxy.start(lb_config(backend.url, host="fuzz.localhost", name="fuzz"))
    return proxy


def crash_signs(log_text: str) -> list[str]:
    return [
        line
        for line in log_text.splitlines()
        if "Traceback" in line or "internal error" in line or "restarting" in line
    ]


def fuzz(seconds: float, seed: int | None = None, threads: int = 12, quiet: bool = False) -> dict:
    """Run the fuzzer; returns the summary (findings under 'findings')."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    say(f"fuzz_proxy: seed {seed}, {seconds:g} s, {threads} threads")
    backend = StrictBackend(record_limit=512)
    tmpdir = tempfile.TemporaryDirectory(prefix="portside-fuzz-")
    proxy = start_portside(Path(tmpdir.name), backend)
    pids = proxy.worker_pids()
    say(f"portside on port {proxy.port}, workers {pids}; backend on {backend.port}")
    stats = Stats()
    started = time.monotonic()
    deadline = started + seconds
    pid_changes: list[str] = []

    def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        mutator = Mutator(rng)
        k = 0
        while time.monotonic() < deadline:
            k += 1
            uid = f"{n}.{k}." + "".join(rng.choice("ghijklmnopqrstuvwxyz") for _ in range(6))
            data = mutator.case(uid)
            run_case(proxy.port, data, rng, stats, uid, backend)
            with stats.lock:
                stats.cases += 1

    pool = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for t in pool:
        t.start()
    try:
        next_report = started + 30
        while any(t.is_alive() for t in pool):
            try:
                time.sleep(0.5)
            except KeyboardInterrupt:
                say("interrupted: stopping early")
                deadline = 0.0  # the client threads see it and finish their case
            now = time.monotonic()
            if now >= next_report or not any(t.is_alive() for t in pool):
                next_report = now + 30
                current = proxy.worker_pids()
                if current != pids:
                    pid_changes.append(f"workers {pids} -> {current} at {now - started:.0f}s")
                    pids = current
                with stats.lock:
                    say(
                        f"[{now - started:6.0f}s] cases {stats.cases} connections "
                        f"{stats.connections} backend requests {len(backend.received)} "
                        f"hangs {len(stats.hangs)} bad responses {len(stats.bad_responses)} "
                        f"desyncs {len(backend.desyncs)}"
                    )
        for t in pool:
            t.join()
        time.sleep(1.0)  # let the last backend answers land
        final_pids = proxy.worker_pids()
        if final_pids != pids:
            pid_changes.append(f"workers {pids} -> {final_pids} at the end")
        log_text = proxy.logs()
        log_copy = Path(tempfile.gettempdir()) / f"portside-fuzz-{seed}.log"
        log_copy.write_text(log_text)
        say(f"portside log kept in {log_copy}")
    finally:
        proxy.stop()
        backend.stop()
        tmpdir.cleanup()
    with backend._lock:
        backend_seqs = {r.seq: r for r in backend.received}
    orphans = [backend_seqs[s] for s in sorted(set(backend_seqs) - stats.seen_seqs)]
    crashes = pid_changes + crash_signs(log_text)
    summary = {
        "seed": seed,
        "seconds": round(time.monotonic() - started, 1),
        "cases": stats.cases,
        "connections": stats.connections,
        "backend_requests": len(backend_seqs),
        "backend_truncated_connections": backend.truncated,
        "responses": dict(sorted(stats.responses.items())),
        "client_errors": dict(stats.errors),
        "crashes": crashes,
        "hangs": stats.hangs,
        "bad_responses": stats.bad_responses,
        "desyncs": list(backend.desyncs),
        "orphans": [(r.seq, r.raw[:300]) for r in orphans],
        "orphan_cases": stats.orphan_cases,
    }
    summary["findings"] = sum(
        len(summary[k]) for k in ("crashes", "hangs", "bad_responses", "desyncs", "orphans")
    )
    say("\n== summary ==")
    for key in (
        "seed",
        "seconds",
        "cases",
        "connections",
        "backend_requests",
        "backend_truncated_connections",
        "responses",
        "client_errors",
    ):
        say(f"{key}: {summary[key]}")
    for key in ("crashes", "hangs", "bad_responses", "desyncs", "orphans", "orphan_cases"):
        items = summary[key]
        say(f"{key}: {len(items)}")
        if key == "hangs":  # the rarer ones first: without an Upgrade field
            items = sorted(items, key=lambda h: b"upgrade" in h[0].lower())
        if key == "desyncs":  # one example of each kind of reason first
            firsts = {}
            for item in items:
                firsts.setdefault(re.sub(r"'.*", "", item[1]), item)
            items = list(firsts.values()) + items
        for item in items[:10]:
            say(f"    {item!r}"[:1500])
    kinds = Counter(
        [("hang", b"upgrade" in d.lower()) for d, _ in summary["hangs"]]
        + [("desync", re.sub(r"'.*", "", reason)) for _, reason, _ in summary["desyncs"]]
        + [("crash", re.sub(r"^\S+ \S+ \[[^]]*\] ", "", line)[:60]) for line in crashes]
    )
    say("findings by kind (hangs: whether the case had an Upgrade field):")
    for kind, count in kinds.most_common():
        say(f"    {count:6d}  {kind}")
    say(f"findings: {summary['findings']}")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--threads", type=int, default=12)
    args = ap.parse_args(argv)
    # Stopped early (SIGTERM), the run still stops portside and prints its summary so far.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    summary = fuzz(args.seconds, args.seed, args.threads)
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
