"""State shared by CLI commands: settings from the environment, built once per run."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from zsindex.config import Settings, check_home

if TYPE_CHECKING:
    from zsindex.catalog.registration import Progress
    from zsindex.client import Client


@dataclass
class CliState:
    debug: bool = False
    _client: Client | None = field(default=None, repr=False)

    @cached_property
    def settings(self) -> Settings:
        settings = Settings.from_env()
        check_home(settings.home)
        return settings

    def client(self, *, text_worker: bool = False, progress: Progress | None = None) -> Client:
        """The in-process client over the configured store (built on first use; a command that
        registers labels asks for the text worker and a progress bar then)."""
        if self._client is None:
            from zsindex.client import Client
            from zsindex.local import LocalBackend

            backend = LocalBackend(self.settings, text_worker=text_worker, progress=progress)
            self._client = Client.from_backend(backend)
        return self._client

    def own(self, client: Client) -> None:
        """Use ``client`` for this command (closed with the state)."""
        self.close()
        self._client = client

    def close(self) -> None:
        """Close the store (if a command opened it)."""
        if self._client is not None:
            self._client.close()
            self._client = None
