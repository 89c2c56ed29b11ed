"""``POST /v1/labelsets/{name}/tune`` and ``/calibrate`` and ``reject_below`` over real HTTP
(uvicorn on loopback, the real app over ``LocalBackend`` with ``colors`` = red, green, blue;
tuning and calibrating go to ``teams``, a label set where zero-shot errs by construction, from
``adapt_cases``, so calibration has errors to fit)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from adapt_cases import LABELS as TEAM_LABELS  # tests/ is not a package
from adapt_cases import TEAMS, team_pngs
from svc_helpers import auth

from zsindex.demo.render import encode_image, render_shape


def pngs(color: str, n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = render_shape(("circle", "star", "cross")[i % 3], color, 48, rng)
        out.append(encode_image(img, "png"))
    return out


EXAMPLES = {"red": pngs("red", 5, 1), "green": pngs("green", 5, 2)}


def _form(examples: dict[str, list[bytes]], **fields: str) -> tuple[dict[str, str], list]:
    labels = [label for label, imgs in examples.items() for _ in imgs]
    files = [
        ("images", (f"{label}_{i}.png", data, "image/png"))
        for label, imgs in examples.items()
        for i, data in enumerate(imgs)
    ]
    return {"labels": json.dumps(labels), **fields}, files


@pytest.fixture
def http(live) -> httpx.Client:  # type: ignore[no-untyped-def]
    server = live()
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        yield c


def _versions(http: httpx.Client) -> int:
    return len(http.get("/v1/labelsets/colors/history").json())


TEAM_EXAMPLES = {"circle": team_pngs("circle", 5, 1, 48), "square": team_pngs("square", 5, 2, 48)}
TEAM_CALIBRATION = {label: team_pngs(label, 6, 3 + i, 48) for i, label in enumerate(TEAMS)}


def test_tune_and_calibrate_over_http(http: httpx.Client) -> None:
    made = http.post(
        "/v1/labelsets",
        json={"name": "teams", "labels": TEAM_LABELS, "model": "zsindex-tiny"},
        headers=auth(),
    )
    assert made.status_code == 201, made.text
    data, files = _form(TEAM_EXAMPLES, alpha="0.2")
    r = http.post("/v1/labelsets/teams/tune", data=data, files=files, headers=auth())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["version"] == 2
    assert body["provenance"]["tune"]["examples"] == {"circle": 5, "square": 5}
    shown = http.get("/v1/labelsets/teams").json()
    assert shown["provenance"] == body["provenance"]
    data, files = _form(TEAM_CALIBRATION, target_precision="0.9")
    r = http.post("/v1/labelsets/teams/calibrate", data=data, files=files, headers=auth())
    assert r.status_code == 201, r.text
    cal = r.json()
    assert (
        cal["version"] == 3
        and cal["temperature"] == cal["provenance"]["calibration"]["temperature"]
    )
    assert cal["provenance"]["tune"] == body["provenance"]["tune"]  # calibration keeps tuning
    paths = http.get("/openapi.json").json()["paths"]
    assert "/v1/labelsets/{name}/tune" in paths and "/v1/labelsets/{name}/calibrate" in paths


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"headers": {}}, 401, "unauthorized"),
        ({"alpha": "1.5"}, 422, "invalid_input"),
        ({"alpha": "half"}, 422, "invalid_input"),
        ({"examples": {"red": EXAMPLES["red"], "mauve": EXAMPLES["green"]}}, 422, "invalid_input"),
        ({"examples": {"red": EXAMPLES["red"]}}, 422, "invalid_input"),
        (
            {"examples": {"red": [b"junk"], "green": EXAMPLES["green"]}},
            415,
            "unsupported_media_type",
        ),
        ({"labels": "not json"}, 422, "invalid_input"),
        ({"labels": json.dumps(["red"])}, 422, "invalid_input"),
        ({"extra": "x"}, 422, "invalid_input"),
        ({"json": True}, 415, "unsupported_media_type"),
    ],
)
def test_bad_tune_requests_answer_4xx_and_write_nothing(
    http: httpx.Client, change: dict, status: int, code: str
) -> None:
    data, files = _form(change.get("examples", EXAMPLES), alpha=change.get("alpha", "0.5"))
    if "labels" in change:
        data["labels"] = change["labels"]
    if "extra" in change:
        data["extra"] = change["extra"]
    headers = change.get("headers", auth())
    if change.get("json"):
        r = http.post("/v1/labelsets/colors/tune", json={"labels": []}, headers=headers)
    else:
        r = http.post("/v1/labelsets/colors/tune", data=data, files=files, headers=headers)
    assert r.status_code == status, r.text
    if status != 415:
        assert r.json()["code"] == code, r.text
    assert "\n" not in r.json()["message"]
    assert _versions(http) == 1


def test_calibration_set_too_small_over_http(http: httpx.Client) -> None:
    data, files = _form({"red": EXAMPLES["red"][:2], "green": EXAMPLES["green"][:2]})
    r = http.post("/v1/labelsets/colors/calibrate", data=data, files=files, headers=auth())
    assert r.status_code == 422 and "too small to fit" in r.json()["message"]
    data, files = _form(EXAMPLES, target_precision="2")
    r = http.post("/v1/labelsets/colors/calibrate", data=data, files=files, headers=auth())
    assert r.status_code == 422 and "target_precision" in r.json()["message"]
    assert _versions(http) == 1


def test_reject_below_over_http_json_and_multipart(http: httpx.Client) -> None:
    import base64

    images = EXAMPLES["green"][:3]
    r = http.post(
        "/v1/classify",
        json={
            "labelset": "colors",
            "images": [base64.b64encode(b).decode() for b in images],
            "reject_below": 0.9,
        },
    )
    assert r.status_code == 200, r.text
    for result in r.json():
        assert result["rejected"] is (result["predictions"][0]["probability"] < 0.9)
        assert result["predictions"]
    files = [("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(images)]
    r2 = http.post("/v1/classify", data={"labelset": "colors", "reject_below": "0.9"}, files=files)
    assert [x["rejected"] for x in r2.json()] == [x["rejected"] for x in r.json()]
    plain = http.post("/v1/classify", data={"labelset": "colors"}, files=files).json()
    assert all(x["rejected"] is False for x in plain)
    bad = http.post("/v1/classify", data={"labelset": "colors", "reject_below": "7"}, files=files)
    assert bad.status_code == 422
