"""HTTP basic authentication against htpasswd lines (bcrypt or {SHA}), for the API.

bcrypt is slow on purpose (tens of milliseconds at the usual cost), and it
would run on the worker's event loop. Credentials that passed are therefore
remembered, so a dashboard polling every second costs one check, not one
per request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import bcrypt

#: Remembered good Authorization values, at most; then the memory starts over.
_REMEMBERED = 64


class BasicAuth:
    """Checks Authorization headers against (user, htpasswd hash) pairs."""

    challenge = b'WWW-Authenticate: Basic realm="portside"\r\n'

    def __init__(self, users: tuple[tuple[str, str], ...]) -> None:
        self._users = dict(users)
        self._accepted: set[str] = set()

    def check(self, values: list[str]) -> bool:
        """Whether the request's Authorization header holds valid credentials."""
        if len(values) != 1:
            return False
        value = values[0].strip()
        if value in self._accepted:
            return True
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = (
                base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self._users.get(user)
        if not sep or hashed is None or not verify(password, hashed):
            return False
        if len(self._accepted) >= _REMEMBERED:
            self._accepted.clear()
        self._accepted.add(value)
        return True


def verify(password: str, hashed: str) -> bool:
    """Whether `password` matches an htpasswd hash: bcrypt ($2a$, $2b$, $2y$) or {SHA}."""
    if hashed.startswith("{SHA}"):
        digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
        return hmac.compare_digest(digest, hashed[len("{SHA}") :])
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False
