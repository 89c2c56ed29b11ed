"""Label-set writes answer a non-JSON body as ``/v1/classify`` does (415
``unsupported_media_type``), and validation messages are plain sentences without pydantic's
``request: Value error, `` prefix, over HTTP and through the remote client."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient
from svc_helpers import auth

from zsindex.errors import InvalidInputError

LABELS = {"name": "pets", "labels": ["dog", "cat"]}
EMBEDDINGS = {
    "names": ["a", "b"],
    "shape": [2, 4],
    "data": base64.b64encode(np.eye(2, 4, dtype="<f4").tobytes()).decode(),
    "model": "zsindex-tiny",
}


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/labelsets"), ("PUT", "/v1/labelsets/pets/embeddings")],
)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
def test_non_json_label_set_writes_are_415_like_classify(
    client: TestClient, method: str, path: str, content_type: str | None
) -> None:
    import json

    body = json.dumps(LABELS if method == "POST" else EMBEDDINGS).encode()
    headers = auth()
    if content_type is not None:
        headers["content-type"] = content_type
    r = client.request(method, path, content=body, headers=headers)
    assert r.status_code == 415, r.text
    classify = client.post("/v1/classify", content=body, headers=headers)
    assert classify.status_code == 415
    assert r.json()["code"] == classify.json()["code"] == "unsupported_media_type"
    assert "application/json" in r.json()["message"]
    assert client.get("/v1/labelsets/pets").status_code == 404  # nothing was written


def test_json_variants_are_accepted_and_keys_are_checked_first(client: TestClient) -> None:
    r = client.post(
        "/v1/labelsets",
        json=LABELS,
        headers={**auth(), "content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 201, r.text
    # Anonymous callers learn 401 before anything about their body.
    anon = client.post("/v1/labelsets", content=b"x", headers={"content-type": "text/plain"})
    assert anon.status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "x"}, "give exactly one source: labels, plugin, or format with content"),
        ({"name": "x", "content": "a\nb"}, "'format' and 'content' go together"),
    ],
)
def test_validation_messages_have_no_pydantic_prefix(
    client: TestClient, body: dict[str, object], message: str
) -> None:
    r = client.post("/v1/labelsets", json=body, headers=auth())
    assert r.status_code == 422
    assert r.json() == {"code": "invalid_input", "message": message}


def test_field_messages_keep_the_field_name_only(client: TestClient) -> None:
    r = client.post("/v1/classify", json={"labelset": "colors", "rank": -1, "embeddings": [[1.0]]})
    assert r.status_code == 422
    assert r.json()["message"] == "rank: rank depth must be at least 0"
    missing = client.post("/v1/classify", json={"labelset": "colors"})
    assert missing.json()["message"] == "give exactly one of 'images' (base64) or 'embeddings'"
    typed = client.post("/v1/classify", json={"labelset": "colors", "k": "many", "embeddings": []})
    assert typed.json()["message"].startswith("k: ")  # pydantic's own type messages stay


def test_remote_client_maps_the_answers_unchanged(live) -> None:
    from zsindex.errors import UnsupportedImageFormatError
    from zsindex.remote_answers import error_from_response

    server = live()
    with httpx.Client(base_url=server.base_url, headers=auth()) as http:
        invalid = http.post("/v1/labelsets", json={"name": "x"})
        wrong_type = http.post("/v1/labelsets", content=b"{}", headers={"content-type": "text/csv"})
    err = error_from_response(invalid)
    assert type(err) is InvalidInputError
    assert err.message == invalid.json()["message"]  # plain on the wire: nothing to clean
    assert err.message == "give exactly one source: labels, plugin, or format with content"
    # The same class as a classify body of the wrong type.
    media = error_from_response(wrong_type)
    assert isinstance(media, UnsupportedImageFormatError)
    assert media.code == "unsupported_media_type"
