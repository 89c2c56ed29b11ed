"""State shared by CLI commands: settings from the environment, built once per run."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from zsindex.config import Settings
from zsindex.errors import InvalidInputError

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
