"""The HTTP service over both stores (SQLite and PostgreSQL): same answers as in process, and a
version registered by another writer becomes current without a restart."""

from __future__ import annotations

import time
from pathlib import Path

from svc_helpers import API_KEY, needs_local, unit_rows

from zsindex.client import Client
from zsindex.config import Settings

pytestmark = needs_local


def test_http_matches_local_and_hot_swaps(db_url: str, model_name: str, tmp_path: Path) -> None:
    from zsindex.local import LocalBackend
    from zsindex.service.app import create_app
    from zsindex.service.server import BackgroundServer

    settings = Settings(
        home=tmp_path / "home",
        database_url=db_url,
        model=model_name,
        pretrained=None,
        device="cpu",
        api_keys=(API_KEY,),
    )
    with Client.local(settings=settings) as writer:
        dim = int(writer.add_labelset("probe", ["x"], model=model_name, templates=["{}"]).dim)
        v1 = writer.import_labelset("swap", unit_rows(3, dim, 1), ["a", "b", "c"], model=model_name)
        app = create_app(settings, LocalBackend(settings), refresh_interval_s=0.1)
        emb = unit_rows(2, dim, 9)
        with BackgroundServer(app) as server, Client(server.base_url, api_key=API_KEY) as http:
            got = http.classify(embeddings=emb, labelset="swap", k=2)
            ref = writer.classify(embeddings=emb, labelset="swap", k=2)
            assert [r.to_dict() for r in got] == [r.to_dict() for r in ref]
            assert got[0].version == v1.version
            v2 = writer.import_labelset("swap", unit_rows(2, dim, 2), ["d", "e"], model=model_name)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                got = http.classify(embeddings=emb, labelset="swap", k=2)
                if got[0].version == v2.version:
                    break
                time.sleep(0.05)
            assert got[0].version == v2.version
            assert {p.label for p in got[0].predictions} == {"d", "e"}
            assert http.labelset("swap") == writer.labelset("swap")
