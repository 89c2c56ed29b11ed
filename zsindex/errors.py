"""One exception tree for zsindex.

Every error a user can cause or meet is a :class:`ZsindexError` subclass carrying a stable
machine-readable ``code`` and the HTTP status the service answers with. The edges translate it:
the CLI prints ``error: <message>`` and exits 1, the HTTP service answers
``{"code": ..., "message": ...}`` with ``http_status``, and the remote client maps the code back
to the same class.
"""

from __future__ import annotations


class ZsindexError(Exception):
    """Base of every zsindex error."""

    code: str = "error"
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInputError(ZsindexError):
    """User input (labels, files, options) is malformed; the message names where and why."""

    code = "invalid_input"
    http_status = 422


class NotFoundError(ZsindexError):
    """A named thing (label set, version, node, plugin) does not exist."""

    code = "not_found"
    http_status = 404


class ConflictError(ZsindexError):
    """A concurrent writer changed the same thing; retrying is safe."""

    code = "conflict"
    http_status = 409


class ModelError(ZsindexError):
    """A model cannot be resolved or loaded (unknown name, missing or unsafe weights)."""

    code = "model_unavailable"
    http_status = 422


class ImageError(ZsindexError):
    """An image cannot be decoded or is invalid."""

    code = "bad_image"
    http_status = 422


class UnsupportedImageFormatError(ImageError):
    """An image's format (decided from its magic bytes) is not on the allow-list."""

    code = "unsupported_media_type"
    http_status = 415


class ImageTooLargeError(ImageError):
    """An image has more pixels or bytes than allowed (decompression bombs included)."""

    code = "image_too_large"
    http_status = 413


class PayloadTooLargeError(ZsindexError):
    """A request body or upload is larger than the configured limit."""

    code = "payload_too_large"
    http_status = 413


class PluginError(ZsindexError):
    """A label-set plugin failed to import or returned bad data."""

    code = "plugin_error"
    http_status = 422


class StoreError(ZsindexError):
    """The SQL store is unreachable or failed."""

    code = "store_unavailable"
    http_status = 503


class SchemaOutOfDateError(StoreError):
    """The database schema is not at the revision this code needs."""

    code = "schema_out_of_date"
    http_status = 503


class CacheError(ZsindexError):
    """An on-disk cache is missing, stale or corrupt (internal; callers rebuild)."""

    code = "cache_invalid"
    http_status = 500


class AuthError(ZsindexError):
    """Missing or wrong API key."""

    code = "unauthorized"
    http_status = 401


class OverloadedError(ZsindexError):
    """The service is at its concurrency limit; retry later."""

    code = "overloaded"
    http_status = 503


class TransportError(ZsindexError):
    """The HTTP client could not talk to the service: connection refused or reset, a protocol
    error, no answer in time, or an answer that is not the service's (a proxy's page, a
    redirect). Raised by the remote client only; the request may or may not have run."""

    code = "transport_error"
    http_status = 502


ERRORS_BY_CODE: dict[str, type[ZsindexError]] = {
    cls.code: cls
    for cls in (
        ZsindexError,
        InvalidInputError,
        NotFoundError,
        ConflictError,
        ModelError,
        ImageError,
        UnsupportedImageFormatError,
        ImageTooLargeError,
        PayloadTooLargeError,
        PluginError,
        StoreError,
        SchemaOutOfDateError,
        CacheError,
        AuthError,
        OverloadedError,
        TransportError,
    )
}
