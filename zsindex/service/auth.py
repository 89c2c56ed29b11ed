"""API-key authentication: ``Authorization: Bearer <key>`` against ``settings.api_keys``.

- Writes always need a key; with no keys configured every write is refused (401 telling the
  operator to set ``ZSINDEX_API_KEYS``).
- Reads (classify, list, show, embeddings, ``/metrics``) need one when
  ``settings.require_auth_for_reads``; ``/healthz`` and ``/readyz`` never do.
- A key is accepted only in the header. A request carrying a key-like query parameter
  (``api_key``, ``token``, …) or any query value equal to a configured key is refused with 401,
  even when its header is valid: a key in a URL ends up in logs and browser history.
- Comparison is constant-time over *all* configured keys (each candidate is compared, the loop
  never stops early), on SHA-256 digests so the key length does not leak either.
- Keys are never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence

from fastapi import Request
from fastapi.security import HTTPBearer

from zsindex.errors import AuthError

KEY_QUERY_PARAMS = frozenset(
    {"api_key", "apikey", "api-key", "key", "token", "access_token", "auth", "authorization"}
)

bearer_scheme = HTTPBearer(auto_error=False, description="An API key from ZSINDEX_API_KEYS.")
"""Only used to document the scheme in OpenAPI; the checks below read the header themselves."""


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class KeyChecker:
    """Checks presented keys against the configured ones (keys kept only as digests)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._digests = tuple(_digest(k) for k in keys if k)

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    def matches(self, presented: str) -> bool:
        """Constant-time: every configured key is compared, whatever the result."""
        candidate = _digest(presented)
        ok = False
        for digest in self._digests:
            ok |= hmac.compare_digest(candidate, digest)
        return ok

    def check_query(self, request: Request) -> None:
        """Refuse keys in the query string (by parameter name or by value)."""
        leaked = False
        for name, value in request.query_params.multi_items():
            by_name = name.lower() in KEY_QUERY_PARAMS
            by_value = bool(self._digests and value and self.matches(value))
            leaked = leaked or by_name or by_value
        if leaked:
            raise AuthError(
                "API keys are accepted only in the 'Authorization: Bearer <key>' header, "
                "never in the query string"
            )

    def check_header(self, request: Request, *, purpose: str) -> None:
        if not self._digests:
            raise AuthError(
                f"{purpose} is disabled: no API keys are configured; set ZSINDEX_API_KEYS "
                "(comma-separated) on the server and send 'Authorization: Bearer <key>'"
            )
        header = request.headers.get("authorization")
        if not header:
            raise AuthError(f"{purpose} needs an API key: send 'Authorization: Bearer <key>'")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise AuthError("malformed Authorization header: use 'Authorization: Bearer <key>'")
        if not self.matches(credentials.strip()):
            raise AuthError("invalid API key")


def require_write(checker: KeyChecker) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: the request must carry a valid key."""

    async def dependency(request: Request) -> None:
        checker.check_query(request)
        checker.check_header(request, purpose="writing")

    return dependency


def require_read(checker: KeyChecker, required: bool) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: keys never in the query; a valid key when ``required``."""

    async def dependency(request: Request) -> None:
        checker.check_query(request)
        if required:
            checker.check_header(request, purpose="reading")

    return dependency
