"""Issue 20 ("what a new user hits"), the Client and HTTP parts: each test failed before its fix.

Both backends run for real: ``Client.local()`` and ``Client(base_url)`` against a served app.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from zsindex import Client
from zsindex.config import Settings
from zsindex.errors import InvalidInputError
from zsindex.options import ClassifyOptions

TINY = "zsindex-tiny"
KEY = "k-new-user"
DIM = 128
# ``red`` is a leaf under both ``circle`` and ``square``: names alone cannot tell them apart.
DUP_NAMES = ["circle", "square", "red", "blue", "red", "green"]
DUP_PARENTS: list[str | int | None] = [None, None, 0, 0, 1, 1]
README_TREE = ["circle", "square", "red circle", "blue circle", "red square", "blue square"]
README_PARENTS = {
    "red circle": "circle",
    "blue circle": "circle",
    "red square": "square",
    "blue square": "square",
}


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, format="PNG")
    return buf.getvalue()


def _unit(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    from zsindex.local import LocalBackend
    from zsindex.service.app import create_app
    from zsindex.service.server import BackgroundServer

    home = tmp_path_factory.mktemp("new-user")
    settings = Settings(home=home, device="cpu", model=TINY, pretrained=None, api_keys=(KEY,))
    local = Client.local(settings=settings)
    local.add_labelset("flat", ["red", "green", "blue"], model=TINY)
    local.import_labelset(
        "dups", _unit(len(DUP_NAMES), 1), DUP_NAMES, parents=DUP_PARENTS, model=TINY
    )
    local.add_labelset("tree", README_TREE, parents=README_PARENTS, model=TINY)
    app = create_app(settings, LocalBackend(settings), refresh_interval_s=0.1)
    with BackgroundServer(app) as server:
        remote = Client(server.base_url, api_key=KEY)
        yield {"local": local, "remote": remote, "url": server.base_url}
        remote.close()
    local.close()


@pytest.fixture(params=["local", "remote"])
def client(request: pytest.FixtureRequest, served: dict[str, object]) -> Client:
    value = served[request.param]
    assert isinstance(value, Client)
    return value


# -- 14: misleading messages -------------------------------------------------------------------


def test_empty_image_list_says_no_images_given(client: Client) -> None:
    with pytest.raises(InvalidInputError, match=r"^no images given"):
        client.classify([], labelset="flat")
    with pytest.raises(InvalidInputError, match=r"^no embeddings given"):
        client.classify(embeddings=np.zeros((0, DIM), np.float32), labelset="flat")


def test_one_image_alone_is_one_image(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(_png((250, 0, 0)))
    as_list = client.classify([str(path)], labelset="flat", k=2)
    for alone in (str(path), path):
        results = client.classify(alone, labelset="flat", k=2)
        assert results == as_list and results[0].image == str(path)
    data = _png((0, 0, 250))
    expected = client.classify([data], labelset="flat", k=2)
    assert client.classify(data, labelset="flat", k=2) == expected
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert client.classify(img, labelset="flat", k=2) == expected
    assert client.classify(io.BytesIO(data), labelset="flat", k=2) == expected


# -- 17: data URLs -----------------------------------------------------------------------------


def test_client_takes_data_urls(client: Client) -> None:
    data = _png((0, 200, 0))
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    (result,) = client.classify([url], labelset="flat", k=3)
    assert result.image == "0"  # a data URL is not a name
    assert result.predictions == client.classify([data], labelset="flat", k=3)[0].predictions
    with pytest.raises(InvalidInputError, match=r"^images\[0\]: .*base64"):
        client.classify(["data:image/png,rawbytes"], labelset="flat")
    with pytest.raises(InvalidInputError, match=r"^images\[0\]: .*text/plain is not an image"):
        client.classify(["data:text/plain;base64,aGk="], labelset="flat")


def test_decode_data_url_variants() -> None:
    from zsindex.classify.inputs import decode_data_url, is_data_url

    payload = base64.b64encode(b"\x89PNG-bytes").decode()
    assert is_data_url("DATA:image/png;base64,x") and not is_data_url("a.png")
    for url in (
        f"data:image/png;base64,{payload}",
        f"data:;base64,{payload}",
        f"data:image/png;name=a.png;base64,{payload[:8]}\n{payload[8:]}",
        f"data:image/png;base64,{payload.replace('+', '%2B').replace('/', '%2F')}",
    ):
        assert decode_data_url(url, "x") == b"\x89PNG-bytes"
    with pytest.raises(InvalidInputError, match=r"^x: the data URL holds no image bytes"):
        decode_data_url("data:image/png;base64,", "x")
    with pytest.raises(InvalidInputError, match=r"^x: the data URL's payload is not valid base64"):
        decode_data_url("data:image/png;base64,@@@", "x")


def test_http_json_takes_data_urls(served: dict[str, object]) -> None:
    url = "data:image/png;base64," + base64.b64encode(_png((0, 200, 0))).decode()
    reply = httpx.post(f"{served['url']}/v1/classify", json={"labelset": "flat", "images": [url]})
    assert reply.status_code == 200, reply.text


# -- 9: the options' rules ---------------------------------------------------------------------

TREE_ONLY = [
    {"rank": 1},
    {"min_confidence": 0.5},
    {"beam": 4},
]


@pytest.mark.parametrize("given", TREE_ONLY, ids=lambda g: next(iter(g)))
def test_tree_options_in_flat_mode_are_refused(client: Client, given: dict[str, object]) -> None:
    name = next(iter(given))
    emb = _unit(1, 3)
    for labelset in ("flat", "dups"):  # flat mode: the mode refuses them on either kind
        with pytest.raises(InvalidInputError, match=rf"^{name} \(--.*not to flat mode"):
            client.classify(embeddings=emb, labelset=labelset, **given)  # type: ignore[arg-type]


def test_beam_outside_beam_mode_and_within_on_flat_sets_are_refused(client: Client) -> None:
    emb = _unit(1, 4)
    with pytest.raises(InvalidInputError, match=r"^beam \(--beam\) applies to the beam mode"):
        client.classify(embeddings=emb, labelset="dups", mode="marginal", beam=4)
    with pytest.raises(InvalidInputError, match=r"^within \(--within\) applies to label trees"):
        client.classify(embeddings=emb, labelset="flat", within="red")
    with pytest.raises(InvalidInputError, match=r"^mode 'beam' needs a tree; 'flat'"):
        client.classify(embeddings=emb, labelset="flat", mode="beam")


def test_http_fields_follow_the_same_rules(served: dict[str, object]) -> None:
    body = {"labelset": "flat", "embeddings": _unit(1, 5).tolist(), "rank": 1}
    reply = httpx.post(f"{served['url']}/v1/classify", json=body)
    assert reply.status_code == 422
    assert reply.json()["message"].startswith("rank (--rank) applies to the beam, marginal")


def test_rules_table_covers_every_restricted_option() -> None:
    from zsindex.options import OPTION_RULES

    names = {"rank", "beam", "within", "min_confidence", "sigmoid"}
    assert set(OPTION_RULES) == names
    # A rule-bound option left at its default is never refused.
    ClassifyOptions().check()
    ClassifyOptions(mode="beam", beam=3, rank=1, min_confidence=0.1, within="x").check()


def test_rank_not_below_within_says_which_ranks_fit(client: Client) -> None:
    with pytest.raises(InvalidInputError, match="give a rank from 2 to 2"):
        client.classify(
            embeddings=_unit(1, 6), labelset="dups", mode="beam", rank=1, within="circle"
        )


# -- 7: repeated leaf names --------------------------------------------------------------------


def test_repeated_leaf_names_are_told_apart(client: Client) -> None:
    emb = _unit(3, 7)
    for mode in ("flat", "marginal", "beam"):
        for result in client.classify(embeddings=emb, labelset="dups", k=4, mode=mode):  # type: ignore[arg-type]
            labels = [p.label for p in result.predictions]
            assert sorted(labels) == ["blue", "circle/red", "green", "square/red"]
            # A path step is still the node's own name.
            assert result.path is None or all("/" not in s.label for s in result.path)
    # The label names its node: it works as ``within``.
    (one,) = client.classify(embeddings=emb[:1], labelset="dups", k=1, within="square/red")
    assert [p.label for p in one.predictions] == ["square/red"]


def test_the_readme_tree_example_works_as_written(client: Client) -> None:
    images = [Image.new("RGB", (48, 48), (250, 0, 0))]
    # README: c.classify(images, labelset="tree", mode="beam", within="circle", min_confidence=0.5)
    (r,) = client.classify(
        images, labelset="tree", mode="beam", within="circle", min_confidence=0.5
    )
    assert r.path is not None and r.path[0].label == "circle" and r.path[0].probability == 1.0
    assert {p.label for p in r.predictions} <= {"circle", "red circle", "blue circle"}
    (r,) = client.classify(images, labelset="tree", mode="beam", rank=2, within="circle")
    assert {p.label for p in r.predictions} == {"red circle", "blue circle"}
