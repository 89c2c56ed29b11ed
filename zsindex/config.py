"""Settings read from ``ZSINDEX_*`` environment variables.

Settings are a plain frozen object passed down explicitly; nothing reads the environment at
import time and nothing heavy is built here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from zsindex.errors import InvalidInputError

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
TINY_MODEL = "zsindex-tiny"

_DEVICE_CHOICES = ("auto", "cpu", "cuda")


def _default_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "zsindex"


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise InvalidInputError(f"{name}={raw!r} is not a boolean: use 0 or 1")


def _parse_list(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def validate_device(device: str) -> str:
    """Return ``device`` if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; raise otherwise."""
    if device in _DEVICE_CHOICES:
        return device
    if device.startswith("cuda:") and device[5:].isdigit():
        return device
    raise InvalidInputError(
        f"ZSINDEX_DEVICE={device!r} is not a device: use auto, cpu, cuda or cuda:N"
    )


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a zsindex process.

    Attributes:
        home: data directory (SQLite file, index caches).
        database_url: SQLAlchemy URL of the store.
        model: default model for new label sets.
        pretrained: default pretrained tag or path (``None`` for models that need none).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        api_keys: keys accepted by the HTTP service for writes.
        plugins: allow-list of label-set plugins (``None``: all installed).
        require_auth_for_reads: whether reads need a key too.
    """

    home: Path = field(default_factory=_default_home)
    database_url: str | None = None
    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED
    device: str = "auto"
    api_keys: tuple[str, ...] = ()
    plugins: tuple[str, ...] | None = None
    require_auth_for_reads: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``ZSINDEX_*`` variables (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        home = (
            Path(env["ZSINDEX_HOME"]).expanduser() if env.get("ZSINDEX_HOME") else _default_home()
        )
        model = env.get("ZSINDEX_MODEL") or DEFAULT_MODEL
        pretrained_raw = env.get("ZSINDEX_PRETRAINED")
        if pretrained_raw:
            pretrained: str | None = pretrained_raw
        else:
            # The default tag belongs to the default model only.
            pretrained = DEFAULT_PRETRAINED if model == DEFAULT_MODEL else None
        return cls(
            home=home,
            database_url=env.get("ZSINDEX_DATABASE_URL") or None,
            model=model,
            pretrained=pretrained,
            device=validate_device(env.get("ZSINDEX_DEVICE") or "auto"),
            api_keys=_parse_list(env.get("ZSINDEX_API_KEYS")) or (),
            plugins=_parse_list(env.get("ZSINDEX_PLUGINS")),
            require_auth_for_reads=_parse_bool(
                "ZSINDEX_REQUIRE_AUTH_FOR_READS", env.get("ZSINDEX_REQUIRE_AUTH_FOR_READS", "0")
            ),
        )

    @property
    def resolved_database_url(self) -> str:
        """The store URL: the configured one, or a SQLite file inside ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'zsindex.sqlite3'}"

    @property
    def cache_dir(self) -> Path:
        """Where rebuildable caches (index files) live."""
        return self.home / "cache"

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with some fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]
