"""Defect 13 (issue 20), the service part: one unreadable image no longer fails the request.

``POST /v1/classify`` answers 200 with one result per image, in order; an image that cannot be
read (unsupported format, too many pixels, corrupt, empty) gets its own result with ``error``
and ``error_code`` and no predictions, as ``Client.local().classify(..., on_error="report")``
does. ``on_error=raise`` still answers the first bad image's 4xx, and what is wrong with the
request itself stays a 4xx. Real uvicorn on loopback over the real ``LocalBackend``.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from svc_helpers import png_bytes
from test_service_images import png_bomb

from zsindex import Client
from zsindex.config import Settings
from zsindex.service.limits import ServiceLimits

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"
CASES: list[tuple[str, bytes, str | None]] = [
    ("ok.png", png_bytes((250, 0, 0)), None),
    ("bomb.png", png_bomb(), "image_too_large"),
    ("doc.pdf", PDF, "unsupported_media_type"),
    ("cut.png", png_bytes((0, 0, 250))[:60], "bad_image"),
    ("empty.png", b"", "bad_image"),
    ("ok2.png", png_bytes((0, 250, 0)), None),
]


def _check_results(results: list[dict[str, Any]], names: list[str]) -> None:
    assert [r["image"] for r in results] == names
    assert len({r["version"] for r in results}) == 1
    for result, (_, _, code) in zip(results, CASES, strict=True):
        if code is None:
            assert result["predictions"] and "error" not in result, result
        else:
            assert result["predictions"] == [] and result["error_code"] == code, result
            message = result["error"]
            assert isinstance(message, str) and "\n" not in message and message


def _multipart(base_url: str, data: dict[str, str] | None = None) -> httpx.Response:
    files = [("images", (name, payload, "application/octet-stream")) for name, payload, _ in CASES]
    return httpx.post(
        f"{base_url}/v1/classify", data={"labelset": "colors", **(data or {})}, files=files
    )


def test_multipart_reports_each_bad_image_in_its_own_result(live: Any) -> None:
    server = live()
    r = _multipart(server.base_url)
    assert r.status_code == 200, r.text
    results = r.json()
    _check_results(results, [name for name, _, _ in CASES])
    assert "bomb.png" in results[1]["error"]  # the message names the upload
    # The good images get the answers they get alone.
    alone = httpx.post(
        f"{server.base_url}/v1/classify",
        data={"labelset": "colors"},
        files=[("images", ("ok.png", CASES[0][1], "image/png"))],
    )
    assert alone.status_code == 200
    [one] = alone.json()
    assert [p["label"] for p in one["predictions"]] == [
        p["label"] for p in results[0]["predictions"]
    ]
    assert [p["probability"] for p in one["predictions"]] == pytest.approx(
        [p["probability"] for p in results[0]["predictions"]], abs=1e-5
    )
    # Asked for explicitly, "report" is the same answer.
    assert _multipart(server.base_url, {"on_error": "report"}).json() == results


def test_json_base64_reports_each_bad_image_in_its_own_result(live: Any) -> None:
    server = live()
    images = [base64.b64encode(payload).decode() for _, payload, _ in CASES]
    images[2] = "data:application/octet-stream;base64," + images[2]  # a data URL too
    r = httpx.post(f"{server.base_url}/v1/classify", json={"labelset": "colors", "images": images})
    assert r.status_code == 200, r.text
    _check_results(r.json(), [str(i) for i in range(len(CASES))])


def test_on_error_raise_still_fails_the_request(live: Any) -> None:
    server = live()
    r = _multipart(server.base_url, {"on_error": "raise"})
    assert r.status_code == 413 and r.json()["code"] == "image_too_large", r.text
    assert "bomb.png" in r.json()["message"]
    images = [base64.b64encode(PDF).decode()]
    r = httpx.post(
        f"{server.base_url}/v1/classify",
        json={"labelset": "colors", "images": images, "on_error": "raise"},
    )
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type", r.text


def test_request_level_errors_stay_4xx(live: Any) -> None:
    server = live(limits=ServiceLimits(max_images_per_request=3, max_body_bytes=200_000))
    url = f"{server.base_url}/v1/classify"
    bad = ("images", ("doc.pdf", PDF, "application/pdf"))
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"data": {"labelset": "nope"}, "files": [bad]}, 404, "not_found"),
        ({"data": {"labelset": "colors", "k": "0"}, "files": [bad]}, 422, "invalid_input"),
        ({"data": {"labelset": "colors", "mode": "beam"}, "files": [bad]}, 422, "invalid_input"),
        ({"data": {"labelset": "colors"}, "files": [bad] * 4}, 413, "payload_too_large"),
        (
            {"data": {"labelset": "colors"}, "files": [("images", ("big", b"\0" * 300_000))]},
            413,
            "payload_too_large",
        ),
        ({"json": {"labelset": "colors", "images": ["not base64!"]}}, 422, "invalid_input"),
        ({"json": {"labelset": "colors", "images": ["/etc/passwd"]}}, 422, "invalid_input"),
    ]
    for kwargs, status, code in cases:
        r = httpx.post(url, **kwargs)
        assert (r.status_code, r.json()["code"]) == (status, code), (kwargs.get("data"), r.text)


def test_openapi_documents_the_error_fields(live: Any) -> None:
    server = live()
    spec = httpx.get(f"{server.base_url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    answer = spec["paths"]["/v1/classify"]["post"]["responses"]["200"]
    item = answer["content"]["application/json"]["schema"]["items"]["$ref"].split("/")[-1]
    fields = schemas[item]["properties"]
    assert {"error", "error_code", "predictions"} <= set(fields)


def test_a_client_asking_to_raise_still_gets_the_exception_type(
    live: Any, settings: Settings
) -> None:
    """The remote client's own ``on_error="report"`` agrees with the local one; with
    ``"raise"`` it gets the exception, not a reported result (it asks the server to raise)."""
    from zsindex.errors import UnsupportedImageFormatError

    server = live()
    local = Client.local(settings=settings)
    with Client(server.base_url) as remote:
        images = [payload for _, payload, _ in CASES]
        here = local.classify(images, labelset="colors", on_error="report")
        there = remote.classify(images, labelset="colors", on_error="report")
        assert [(r.error_code, r.predictions) for r in here] == [
            (r.error_code, r.predictions) for r in there
        ]
        for client in (local, remote):
            with pytest.raises(UnsupportedImageFormatError):
                client.classify([CASES[0][1], PDF], labelset="colors")
    local.close()
