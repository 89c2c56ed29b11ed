"""What a new user hits when registering label sets (issue 20), in process and over HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from zsindex import Client
from zsindex.config import Settings
from zsindex.errors import InvalidInputError

TINY = "zsindex-tiny"
KEY = "new-user-key-0123456789abcdef"
SHAPES = ["circle", "red circle", "blue circle"]
TYPO = {"red circle": "circle", "blue circle": "cirlce"}
LONG = " ".join(["word"] * 100)  # far past the 77-token context
CUPL = {"circle": ["a round thing", "a disc"], "square": ["a boxy thing"]}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", device="cpu", model=TINY, api_keys=(KEY,))


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    c = Client.local(settings=settings)
    yield c
    c.close()


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    from zsindex.local import LocalBackend
    from zsindex.service.app import create_app

    with TestClient(create_app(settings, LocalBackend(settings), batching=False)) as tc:
        yield tc


def _post(http: TestClient, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    r = http.post("/v1/labelsets", json=body, headers={"Authorization": f"Bearer {KEY}"})
    return r.status_code, r.json()


# -- a typo in parents ----------------------------------------------------------------------------


def test_a_parent_typo_is_refused_in_python_and_nothing_is_written(client: Client) -> None:
    with pytest.raises(InvalidInputError) as info:
        client.add_labelset("shapes", SHAPES, parents=TYPO)
    assert "'blue circle'" in info.value.message and "'cirlce'" in info.value.message
    assert client.labelsets() == []


def test_a_parent_typo_is_422_invalid_input_over_http(http: TestClient) -> None:
    status, body = _post(http, {"name": "shapes", "labels": SHAPES, "parents": TYPO})
    assert status == 422 and body["code"] == "invalid_input", body
    assert "'blue circle'" in str(body["message"]) and "'cirlce'" in str(body["message"])
    assert http.get("/v1/labelsets").json() == []


# -- truncation is counted whatever the text cache holds ------------------------------------------


def test_truncation_is_counted_and_warned_on_a_cache_hit(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        first = client.add_labelset("long1", [LONG, "short"])
    assert first.num_truncated == 7  # one long label x the 7 default templates
    assert "truncated" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        second = client.add_labelset("long2", [LONG, "short"])  # every label from the cache
    assert second.num_truncated == 7
    assert client.labelset("long2").num_truncated == 7
    assert "truncated" in caplog.text


def test_strict_refuses_a_cached_long_label(client: Client) -> None:
    client.add_labelset("long1", [LONG])
    with pytest.raises(InvalidInputError, match="exceed the model's context"):
        client.add_labelset("long2", [LONG], strict=True)


def test_short_labels_report_no_truncation_from_the_cache(client: Client) -> None:
    client.add_labelset("a", ["dog", "cat"])
    assert client.add_labelset("b", ["dog", "cat"]).num_truncated == 0


# -- a {label: [prompts]} set shows the prompts were used, not templates ---------------------------


def test_a_prompts_only_set_lists_no_templates(client: Client) -> None:
    info = client.add_labelset("cupl", CUPL)
    assert info.templates == [] and client.labelset("cupl").templates == []


def test_a_set_with_some_template_labels_keeps_its_templates(client: Client) -> None:
    info = client.add_labelset("mixed", {"circle": ["a round thing"], "square": []})
    assert len(info.templates) == 7


# -- re-registering identical content says nothing new was stored ----------------------------------


def test_identical_content_is_reported_unchanged(client: Client) -> None:
    first = client.add_labelset("shapes", ["circle", "square"])
    assert first.version == 1 and first.unchanged is False
    again = client.add_labelset("shapes", ["circle", "square"])
    assert again.version == 1 and again.unchanged is True
    changed = client.add_labelset("shapes", ["circle", "square", "star"])
    assert changed.version == 2 and changed.unchanged is False
    assert client.labelset("shapes").unchanged is False  # a plain read is not a registration


def test_identical_content_over_http_answers_unchanged(http: TestClient) -> None:
    body = {"name": "shapes", "labels": ["circle", "square"]}
    status, first = _post(http, body)
    assert status == 201 and first.get("unchanged", False) is False
    status, again = _post(http, body)
    assert again["unchanged"] is True and again["version"] == 1, again
    assert {"name", "version", "num_labels", "model", "templates", "digest"} <= set(again)
    assert again["digest"] == first["digest"]


# -- row numbers of an imported matrix count from 1 like every other position ---------------------


def test_a_bad_embedding_row_is_numbered_from_one(client: Client) -> None:
    import numpy as np

    matrix = np.ones((3, 128), dtype=np.float32)
    matrix[1, 5] = np.nan
    with pytest.raises(InvalidInputError, match=r"row 2 \(index 1\) has non-finite"):
        client.import_labelset("imp", matrix, ["a", "b", "c"], model=TINY)
    matrix[1] = 0.0
    with pytest.raises(InvalidInputError, match=r"row 2 \(index 1\) is all zeros"):
        client.import_labelset("imp", matrix, ["a", "b", "c"], model=TINY)
