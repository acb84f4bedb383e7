"""Length-prefixed JSON messages between the master and its children.

The master and each child share one end of a socketpair. A message is a
4-byte big-endian length followed by that many bytes of UTF-8 JSON. JSON
rather than pickle, so that a child can never make the master run code.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

_LENGTH = struct.Struct("!I")
#: A snapshot with thousands of routers is a few MiB; anything bigger is a bug.
MAX_MESSAGE = 64 * 1024 * 1024

Message = dict[str, Any]


class ChannelError(Exception):
    """The peer sent something that is not a valid message."""


def encode(message: Message) -> bytes:
    """Frame one message for the wire."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return _LENGTH.pack(len(body)) + body


class MessageReader:
    """Reassembles framed messages from a byte stream fed in arbitrary pieces."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes; return every message they completed."""
        self._buffer += data
        messages = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > MAX_MESSAGE:
                raise ChannelError(f"message of {length} bytes exceeds {MAX_MESSAGE}")
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            try:
                messages.append(json.loads(self._buffer[_LENGTH.size : end]))
            except ValueError as exc:
                raise ChannelError(f"undecodable message: {exc}") from exc
            del self._buffer[:end]
        return messages


class Channel:
    """The master's non-blocking end of a socketpair, driven by its selector loop.

    Writes are queued and flushed when the socket is writable, so a child that
    is slow to read can never block the master.
    """

    __slots__ = ("sock", "_reader", "_out")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._reader = MessageReader()
        self._out = bytearray()

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def wants_write(self) -> bool:
        """True while queued output remains."""
        return bool(self._out)

    def send(self, message: Message) -> None:
        """Queue a message and write as much as the socket takes now."""
        self.send_encoded(encode(message))

    def send_encoded(self, frame: bytes) -> None:
        """send() for a message already framed by encode(), e.g. one sent to every worker."""
        self._out += frame
        self.flush()

    def flush(self) -> None:
        """Write queued output; a peer that went away is noticed on the next read."""
        try:
            while self._out:
                sent = self.sock.send(self._out)
                del self._out[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._out.clear()

    def receive(self) -> list[Message]:
        """Read what is available. Raises EOFError when the peer has closed."""
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as exc:
            raise EOFError(str(exc)) from exc
        if not data:
            raise EOFError("peer closed the channel")
        return self._reader.feed(data)

    def close(self) -> None:
        self.sock.close()
