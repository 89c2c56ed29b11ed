"""Settings read from the environment: the one module that reads it.

:meth:`Settings.from_env` parses every ``ZSINDEX_*`` variable the package uses (and the few
variables of other tools that the download probe mirrors, see :func:`network_from_env`) into a
plain frozen object that is passed down explicitly. A bad value raises
:class:`~zsindex.errors.InvalidInputError` naming the variable and what to set instead. Nothing
reads the environment at import time and nothing heavy is imported here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from zsindex.errors import InvalidInputError
from zsindex.settings_types import (
    DEFAULT_BEAM_TOLERANCE,
    HF_ENDPOINT_DEFAULT,
    BatchingConfig,
    NetworkSettings,
    ServiceLimits,
    ServingConfig,
)

__all__ = [
    "DEFAULT_INDEX",
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
    "TINY_MODEL",
    "BatchingConfig",
    "NetworkSettings",
    "ServiceLimits",
    "ServingConfig",
    "Settings",
    "check_home",
    "network_from_env",
    "validate_device",
]

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
TINY_MODEL = "zsindex-tiny"
DEFAULT_INDEX = "exact"
DEFAULT_REFRESH_INTERVAL_S = 2.0

_DEVICE_CHOICES = ("auto", "cpu", "cuda")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

Env = Mapping[str, str]


def _environ(environ: Env | None) -> Env:
    return os.environ if environ is None else environ


def _default_home(environ: Env | None = None) -> Path:
    xdg = _environ(environ).get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "zsindex"


def _raw(env: Env, name: str) -> str | None:
    """The variable's value as set; ``None`` when unset or blank (then the default applies)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    return raw


def _env_bool(env: Env, name: str, default: bool) -> bool:
    raw = _raw(env, name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidInputError(f"{name}={raw!r} is not a boolean: use 0 or 1")


def _unset_hint(default: object) -> str:
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    return f"unset it for the default ({shown})"


def _env_int(
    env: Env, name: str, default: int, minimum: int = 1, default_text: str | None = None
) -> int:
    raw = _raw(env, name)
    if raw is None:
        return default
    hint = _unset_hint(default if default_text is None else default_text)
    try:
        value = int(raw.strip())
    except ValueError:
        raise InvalidInputError(
            f"{name}={raw!r} is not an integer: use a whole number of at least {minimum}, or {hint}"
        ) from None
    if value < minimum:
        raise InvalidInputError(f"{name}={raw!r} must be at least {minimum}, or {hint}")
    return value


def _env_float(env: Env, name: str, default: float, minimum: float = 0.0) -> float:
    raw = _raw(env, name)
    if raw is None:
        return default
    hint = _unset_hint(default)
    try:
        value = float(raw.strip())
    except ValueError:
        raise InvalidInputError(
            f"{name}={raw!r} is not a number: use a number of at least {minimum:g}, or {hint}"
        ) from None
    if not value >= minimum:  # also rejects NaN
        raise InvalidInputError(f"{name}={raw!r} must be at least {minimum:g}, or {hint}")
    return value


def _beam_tolerance(env: Env) -> float:
    name = "ZSINDEX_BEAM_TOLERANCE"
    value = _env_float(env, name, DEFAULT_BEAM_TOLERANCE)
    if not 0.0 < value < 1.0:
        raise InvalidInputError(
            f"{name}={_raw(env, name)!r} must be above 0 and below 1 (e.g. 0.001), or unset it "
            f"for {DEFAULT_BEAM_TOLERANCE:g}"
        )
    return value


def _parse_list(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def check_home(home: Path) -> None:
    """Refuse a data directory that is (or lies under) a file, before anything tries to create
    the store in it, in one line naming the setting."""
    node = home
    while not node.exists() and node.parent != node:
        node = node.parent
    if node.exists() and not node.is_dir():
        where = "is a file" if node == home else f"lies under the file {node}"
        raise InvalidInputError(
            f"ZSINDEX_HOME={home} {where}, not a folder: set ZSINDEX_HOME to a folder "
            "(it is created if missing)"
        )


def validate_device(device: str) -> str:
    """Return ``device`` if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; raise otherwise."""
    if device in _DEVICE_CHOICES:
        return device
    if device.startswith("cuda:") and device[5:].isdigit():
        return device
    raise InvalidInputError(
        f"ZSINDEX_DEVICE={device!r} is not a device: use auto, cpu, cuda or cuda:N"
    )


def _index_from_env(env: Env) -> str:
    """``ZSINDEX_INDEX`` in canonical form, checked with the index layer's own grammar (which is
    imported only when the variable names something other than ``exact``)."""
    raw = _raw(env, "ZSINDEX_INDEX")
    if raw is None:
        return DEFAULT_INDEX
    spec = raw.strip()
    if spec.lower() == DEFAULT_INDEX:
        return DEFAULT_INDEX
    from zsindex.index.types import IndexSpec  # lazily: numpy, not needed by most processes

    try:
        return IndexSpec.parse(spec).canonical()
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"ZSINDEX_INDEX={raw!r} is not an index spec ({exc}): use e.g. exact, ivf1024 or "
            "hnsw32, or unset it for exact search"
        ) from None


def _limits_from_env(env: Env) -> ServiceLimits:
    d = ServiceLimits()
    return ServiceLimits(
        max_body_bytes=_env_int(env, "ZSINDEX_MAX_BODY_BYTES", d.max_body_bytes),
        max_images_per_request=_env_int(
            env, "ZSINDEX_MAX_IMAGES_PER_REQUEST", d.max_images_per_request
        ),
        max_embeddings_per_request=_env_int(
            env, "ZSINDEX_MAX_EMBEDDINGS_PER_REQUEST", d.max_embeddings_per_request
        ),
        max_image_pixels=_env_int(env, "ZSINDEX_MAX_IMAGE_PIXELS", d.max_image_pixels),
        max_concurrency=_env_int(env, "ZSINDEX_MAX_CONCURRENCY", d.max_concurrency),
        request_timeout_s=_env_float(
            env, "ZSINDEX_REQUEST_TIMEOUT_S", d.request_timeout_s, minimum=0.001
        ),
    )


def _batching_from_env(env: Env) -> BatchingConfig:
    d = BatchingConfig()
    threads = _env_int(env, "ZSINDEX_TORCH_THREADS", 0, minimum=0, default_text="torch's own")
    return BatchingConfig(
        enabled=_env_bool(env, "ZSINDEX_BATCHING", d.enabled),
        max_batch_images=_env_int(env, "ZSINDEX_BATCH_MAX_IMAGES", d.max_batch_images),
        max_wait_s=_env_float(env, "ZSINDEX_BATCH_MAX_WAIT_MS", d.max_wait_s * 1000) / 1000,
        model_workers=_env_int(env, "ZSINDEX_MODEL_WORKERS", d.model_workers),
        torch_threads=threads or None,
    )


def _serving_from_env(env: Env) -> ServingConfig:
    d = ServingConfig()
    raw = _raw(env, "ZSINDEX_PRELOAD")
    preload: tuple[str, ...] | None
    if raw is None or raw.strip() == "*":
        preload = None
    elif raw.strip() == "-":
        preload = ()
    else:
        preload = _parse_list(raw)
    return ServingConfig(
        preload=preload,
        notify=_env_bool(env, "ZSINDEX_NOTIFY", d.notify),
        drain_s=_env_float(env, "ZSINDEX_DRAIN_S", d.drain_s),
        shutdown_timeout_s=_env_float(env, "ZSINDEX_SHUTDOWN_TIMEOUT_S", d.shutdown_timeout_s),
    )


def _first_set(env: Env, *names: str) -> str:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return ""


def network_from_env(environ: Env | None = None) -> NetworkSettings:
    """The download probe's settings (``os.environ`` by default).

    ``ZSINDEX_OFFLINE`` is ours and must be 0 or 1. ``HF_HUB_OFFLINE`` and
    ``TRANSFORMERS_OFFLINE`` belong to Hugging Face and are read its way (1/true/yes/on: offline;
    anything else: not), as are ``HF_ENDPOINT`` and the ``*_proxy`` variables (lower case first).
    """
    env = _environ(environ)
    hf_offline = any(
        env.get(name, "").strip().lower() in _TRUE
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return NetworkSettings(
        offline=_env_bool(env, "ZSINDEX_OFFLINE", False) or hf_offline,
        hf_endpoint=env.get("HF_ENDPOINT") or HF_ENDPOINT_DEFAULT,
        http_proxy=_first_set(env, "http_proxy", "HTTP_PROXY"),
        https_proxy=_first_set(env, "https_proxy", "HTTPS_PROXY"),
        all_proxy=_first_set(env, "all_proxy", "ALL_PROXY"),
    )


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a zsindex process (variables listed in the README).

    Attributes:
        home: data directory (SQLite file, index caches) (``ZSINDEX_HOME``).
        database_url: SQLAlchemy URL of the store (``ZSINDEX_DATABASE_URL``).
        model: default model for new label sets (``ZSINDEX_MODEL``).
        pretrained: default pretrained tag or path (``None`` for models that need none)
            (``ZSINDEX_PRETRAINED``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``ZSINDEX_DEVICE``).
        api_keys: keys accepted by the HTTP service for writes (``ZSINDEX_API_KEYS``).
        plugins: allow-list of label-set plugins (``None``: all installed) (``ZSINDEX_PLUGINS``).
        require_auth_for_reads: whether reads need a key too
            (``ZSINDEX_REQUIRE_AUTH_FOR_READS``).
        limits: the HTTP service's limits (``ZSINDEX_MAX_*``, ``ZSINDEX_REQUEST_TIMEOUT_S``).
        batching: the service's micro-batching (``ZSINDEX_BATCHING``, ``ZSINDEX_BATCH_*``,
            ``ZSINDEX_MODEL_WORKERS``, ``ZSINDEX_TORCH_THREADS``).
        refresh_interval_s: seconds between the service's background refreshes of label sets;
            0 refreshes once at start-up only (``ZSINDEX_REFRESH_INTERVAL_S``, default 2).
        network: the probe run before a weights download (``ZSINDEX_OFFLINE``, ``HF_*``,
            proxies).
        fast_decode: decode JPEGs in draft mode (reduced scale, faster, not bit-exact) where a
            request does not say (``ZSINDEX_FAST_DECODE``, default off).
        serving: how a service replica preloads, follows the store (NOTIFY) and drains
            (``ZSINDEX_PRELOAD``, ``ZSINDEX_NOTIFY``, ``ZSINDEX_DRAIN_S``,
            ``ZSINDEX_SHUTDOWN_TIMEOUT_S``).
        index: the index spec of label sets that do not ask for one, in canonical form
            (``IndexSpec.canonical``) (``ZSINDEX_INDEX``, default ``exact``; e.g. ``ivf1024``,
            ``hnsw32,fp16``).
        beam_tolerance: the path probability the adaptive beam (``beam`` mode without a width)
            may drop, over all levels (``ZSINDEX_BEAM_TOLERANCE``, default 0.001, in (0, 1)).
    """

    home: Path = field(default_factory=_default_home)
    database_url: str | None = None
    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED
    device: str = "auto"
    api_keys: tuple[str, ...] = ()
    plugins: tuple[str, ...] | None = None
    require_auth_for_reads: bool = False
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S
    network: NetworkSettings = field(default_factory=NetworkSettings)
    fast_decode: bool = False
    index: str = DEFAULT_INDEX
    serving: ServingConfig = field(default_factory=ServingConfig)
    beam_tolerance: float = DEFAULT_BEAM_TOLERANCE

    @classmethod
    def from_env(cls, environ: Env | None = None) -> Settings:
        """Build settings from the environment (``os.environ`` by default).

        Raises:
            InvalidInputError: a variable has a value it cannot take; the message names it.
        """
        env = _environ(environ)
        home = (
            Path(env["ZSINDEX_HOME"]).expanduser()
            if env.get("ZSINDEX_HOME")
            else _default_home(env)
        )
        check_home(home)
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
            require_auth_for_reads=_env_bool(env, "ZSINDEX_REQUIRE_AUTH_FOR_READS", False),
            limits=_limits_from_env(env),
            batching=_batching_from_env(env),
            refresh_interval_s=_env_float(
                env, "ZSINDEX_REFRESH_INTERVAL_S", DEFAULT_REFRESH_INTERVAL_S, minimum=0.0
            ),
            network=network_from_env(env),
            fast_decode=_env_bool(env, "ZSINDEX_FAST_DECODE", False),
            index=_index_from_env(env),
            serving=_serving_from_env(env),
            beam_tolerance=_beam_tolerance(env),
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
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]  # dataclasses.replace takes the fields' own types
