"""zsindex: zero-shot image classification with CLIP label sets stored in SQL.

Importing this package is light: torch and open_clip load only when a model is first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "Settings", "__version__"]

if TYPE_CHECKING:
    from zsindex.client import Client
    from zsindex.config import Settings


def __getattr__(name: str) -> Any:
    # Lazy attributes keep `import zsindex` free of torch, SQLAlchemy engines and open_clip.
    if name == "Client":
        from zsindex.client import Client

        return Client
    if name == "Settings":
        from zsindex.config import Settings

        return Settings
    raise AttributeError(f"module 'zsindex' has no attribute {name!r}")
