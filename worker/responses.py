"""Responses the proxy writes itself: errors with a short plain-text body.

The common ones are built once, so answering a 404 flood costs one dict
lookup and one write.
"""

from __future__ import annotations

from http import HTTPStatus

_BODIES = {
    400: "400 Bad Request\n",
    404: "404 page not found\n",
    408: "408 Request Timeout\n",
    413: "413 Request Entity Too Large\n",
    414: "414 URI Too Long\n",
    431: "431 Request Header Fields Too Large\n",
    501: "501 Not Implemented\n",
    502: "502 Bad Gateway\n",
    503: "503 Service Unavailable\n",
    504: "504 Gateway Timeout\n",
    505: "505 HTTP Version Not Supported\n",
}


def _build(status: int, body: str, keep_alive: bool, http10: bool) -> bytes:
    return local_response(status, body.encode(), keep_alive=keep_alive, http10=http10)


def local_response(
    status: int,
    body: bytes,
    *,
    keep_alive: bool,
    http10: bool = False,
    content_type: bytes = b"text/plain; charset=utf-8",
    extra: bytes = b"",
    head: bool = False,
) -> bytes:
    """A complete response the proxy writes itself; `extra` holds more header lines
    (each ending in CRLF); `head` leaves the body out (a HEAD request)."""
    if keep_alive:
        connection = b"Connection: keep-alive\r\n" if http10 else b""
    else:
        connection = b"Connection: close\r\n"
    return (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n%s") % (
        status,
        HTTPStatus(status).phrase.encode(),
        content_type,
        len(body),
        extra,
        connection,
        b"" if head else body,
    )


_CACHE = {
    (status, keep_alive, http10): _build(status, body, keep_alive, http10)
    for status, body in _BODIES.items()
    for keep_alive in (True, False)
    for http10 in (True, False)
}


def error_response(
    status: int, *, keep_alive: bool, http10: bool = False, detail: str | None = None
) -> bytes:
    """A complete error response; `detail` replaces the default body text."""
    if detail is None:
        cached = _CACHE.get((status, keep_alive, http10))
        if cached is not None:
            return cached
        return _build(status, f"{status} {HTTPStatus(status).phrase}\n", keep_alive, http10)
    return _build(status, f"{status} {HTTPStatus(status).phrase}: {detail}\n", keep_alive, http10)
