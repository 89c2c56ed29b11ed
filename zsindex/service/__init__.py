"""The HTTP service: ``create_app(settings, backend=None)`` builds the FastAPI app.

Importing this package is light; FastAPI loads with :mod:`zsindex.service.app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServiceLimits", "create_app"]

if TYPE_CHECKING:
    from zsindex.service.app import create_app
    from zsindex.service.limits import ServiceLimits


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from zsindex.service.app import create_app

        return create_app
    if name == "ServiceLimits":
        from zsindex.service.limits import ServiceLimits

        return ServiceLimits
    raise AttributeError(f"module 'zsindex.service' has no attribute {name!r}")
