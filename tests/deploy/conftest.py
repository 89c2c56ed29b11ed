"""The distributions every deploy test installs: built once per session from a build context."""

from __future__ import annotations

import pytest
from deploy_support import Dists, build_dists


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    return build_dists(tmp_path_factory.mktemp("dists"))
