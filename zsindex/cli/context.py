"""State shared by CLI commands: settings from the environment, built once per run."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from zsindex.config import Settings

if TYPE_CHECKING:
    from zsindex.client import Client
    from zsindex.local import LocalBackend


@dataclass
class CliState:
    debug: bool = False
    _client: Client | None = field(default=None, repr=False)

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env()

    def client(self) -> Client:
        """The in-process client over the configured store (opened on first use)."""
        if self._client is None:
            from zsindex.client import Client

            self._client = Client.local(settings=self.settings)
        return self._client

    def local(self) -> LocalBackend:
        """The in-process engine behind :meth:`client` (CLI-only extras: files, progress)."""
        from zsindex.local import LocalBackend

        backend = self.client().backend
        if not isinstance(backend, LocalBackend):  # pragma: no cover - the CLI is always local
            raise TypeError("the CLI runs in process")
        return backend

    def close(self) -> None:
        """Close the store (if a command opened it)."""
        if self._client is not None:
            self._client.close()
            self._client = None
