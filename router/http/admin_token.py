"""The HTTP admin API's bearer token: where it comes from, and whether a request carries it.

The token is the content of ``security.token_file`` (whitespace around it stripped), else
the environment variable RINGCACHE_ADMIN_TOKEN; without either the API is open, as the
demo on 127.0.0.1 is. The router reads it at start and again after every reload; the
CLI reads it the same way (router/cli/client.py).
"""

from __future__ import annotations

import base64
import hmac
import os
from collections.abc import Mapping

ENV = "RINGCACHE_ADMIN_TOKEN"


class TokenUnavailable(Exception):
    """A token is configured but cannot be read: every protected request is refused."""


def read_token(token_file: str | None, environ: Mapping[str, str]) -> bytes | None:
    """The token from ``token_file``, else from the environment; None when neither has
    one. Raises TokenUnavailable for a file that cannot be read or holds no token."""
    if token_file is None:
        token = environ.get(ENV, "").strip().encode("utf-8", "surrogateescape")
        return _checked(token, f"${ENV}") if token else None
    try:
        with open(token_file, "rb") as f:
            token = f.read(64 << 10).strip()
    except OSError as exc:
        raise TokenUnavailable(f"cannot read the token file {token_file}: {exc.strerror}") from None
    if not token:
        raise TokenUnavailable(f"the token file {token_file} is empty")
    return _checked(token, f"the token file {token_file}")


def configured(token_file: str | None, environ: Mapping[str, str]) -> bool:
    """Whether a token is set, readable or not: one that cannot be read refuses every
    protected request, so the API is not open either way."""
    return token_file is not None or bool(environ.get(ENV, "").strip())


def _checked(token: bytes, where: str) -> bytes:
    # It travels in an HTTP header: one word of printable ASCII.
    if any(byte < 0x21 or byte > 0x7E for byte in token):
        raise TokenUnavailable(f"{where}: the token must be one word of printable ASCII")
    return token


def bearer(authorization: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer TOKEN`` header value, or of ``Basic`` with
    the token as the password (what a browser sends for the status page), or None."""
    scheme, _, token = (authorization or b"").strip().partition(b" ")
    if scheme.lower() == b"basic":
        try:
            credentials = base64.b64decode(token.strip(), validate=True)
        except ValueError:
            return None
        return credentials.partition(b":")[2] or None
    if scheme.lower() != b"bearer":
        return None
    return token.strip() or None


class AdminToken:
    """The token in force for a topology's ``security`` block, read once per block."""

    def __init__(self, environ: Mapping[str, str] = os.environ):
        self.environ = environ
        self._security = None  # the SecurityConfig the token below was read for
        self._token: bytes | None = None
        self._problem: str | None = None

    def required(self, security) -> bytes | None:
        """The token requests must carry under ``security``, or None when there is none.
        A reload brings a new block, so the file and environment are read again then.
        Raises TokenUnavailable when the configured token cannot be read."""
        if security is not self._security:
            self._security = security
            try:
                self._token, self._problem = read_token(security.token_file, self.environ), None
            except TokenUnavailable as exc:
                self._token, self._problem = None, str(exc)
        if self._problem is not None:
            raise TokenUnavailable(self._problem)
        return self._token

    @staticmethod
    def matches(token: bytes, authorization: bytes | None) -> bool:
        given = bearer(authorization)
        # compare_digest: the time taken does not tell how much of a guess was right.
        return given is not None and hmac.compare_digest(given, token)
