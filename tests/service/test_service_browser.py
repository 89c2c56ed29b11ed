"""The web page at ``/`` in a real headless Chromium (Playwright): upload, pick, see bars + path.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and ``pip install playwright``; the
browser bundled by ``playwright install`` is not used. Skipped only when chromium is absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from svc_backends import MODEL, RecordingBackend
from svc_helpers import png_bytes

from zsindex.options import LabelSource

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

PALETTE = ["warm colour", "cool colour", "red", "green", "blue"]
PALETTE_PARENTS = {"red": "warm colour", "green": "cool colour", "blue": "cool colour"}

if CHROMIUM is None and os.environ.get("ZSINDEX_REQUIRE_BROWSER") == "1":
    # `make test` installs Debian's chromium first: missing it there is a failure, not a skip.
    raise RuntimeError("chromium is required (ZSINDEX_REQUIRE_BROWSER=1) but not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def _rows(page: Any) -> list[tuple[str, float]]:
    """(label, bar width in %) of each prediction row on the page, in page order."""
    return [
        (
            r.query_selector(".label").inner_text(),
            r.eval_on_selector(".bar > span", "e => parseFloat(e.style.width)"),
        )
        for r in page.query_selector_all(".prediction")
    ]


def _submit(page: Any, labelset: str, mode: str, k: int) -> None:
    page.select_option("#labelset", labelset)
    page.select_option("#mode", mode)
    page.fill("#k", str(k))
    page.click("#submit")
    page.wait_for_function(
        "([name, n]) => document.querySelector('#status').textContent === 'Done.'"
        " && document.querySelector('#predictions h2')?.textContent.startsWith(name + ' ')"
        " && document.querySelectorAll('.prediction').length === n",
        arg=[labelset, k],
    )


def test_upload_classify_and_see_predictions(
    live, backend_under_test: RecordingBackend, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    backend_under_test.add_labelset(
        "shapes", LabelSource(labels=["circle", "square", "triangle"]), model=MODEL
    )
    backend_under_test.add_labelset(
        "palette", LabelSource(labels=PALETTE, parents=PALETTE_PARENTS), model=MODEL
    )
    server = live()
    image = tmp_path / "red.png"
    image.write_bytes(png_bytes((250, 10, 10), size=(64, 64)))
    # What the API itself answers for the tree, to compare the page against.
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        r = http.post(
            "/v1/classify",
            data={"labelset": "palette", "mode": "beam", "k": "3"},
            files=[("images", ("red.png", image.read_bytes(), "image/png"))],
        )
        assert r.status_code == 200, r.text
        expected = r.json()[0]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.base_url + "/")
            page.wait_for_selector("#labelset option[value='shapes']", state="attached")
            options = page.eval_on_selector_all("#labelset option", "els => els.map(e => e.value)")
            assert options == ["colors", "palette", "shapes"]
            page.set_input_files("#image", str(image))

            # Flat: the real model sees red; bars are the probabilities, largest first.
            _submit(page, "colors", "flat", 3)
            rows = _rows(page)
            labels = [label for label, _ in rows]
            assert sorted(labels) == ["blue", "green", "red"] and labels[0] == "red"
            widths = [width for _, width in rows]
            assert widths == sorted(widths, reverse=True) and 50 < widths[0] <= 100
            assert page.inner_text("#path") == ""  # a flat label set has no path

            # Beam over a real tree: the page shows exactly what the API answers, path included.
            _submit(page, "palette", "beam", 3)
            rows = _rows(page)
            assert [label for label, _ in rows] == [p["label"] for p in expected["predictions"]]
            assert sorted(label for label, _ in rows) == ["blue", "green", "red"]
            for (_, width), pred in zip(rows, expected["predictions"], strict=True):
                assert width == pytest.approx(100 * pred["probability"], abs=0.06)
                assert 0 <= width <= 100
            path_text = page.inner_text("#path")
            steps = [step["label"] for step in expected["path"]]
            assert len(steps) == 2 and steps[0] in PALETTE[:2] and steps[1] in PALETTE[2:]
            assert path_text.startswith("Path: ")
            assert all(step in path_text for step in steps)
            assert path_text.index(steps[0]) < path_text.index(steps[1])
            assert page.inner_text("#status") == "Done."
            page.screenshot(path=str(ARTIFACTS / "service_web_page.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    assert (ARTIFACTS / "service_web_page.png").stat().st_size > 1000


def test_error_from_the_api_is_shown(live, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    server = live()
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(server.base_url + "/")
            page.wait_for_selector("#labelset option[value='colors']", state="attached")
            page.set_input_files("#image", str(bad))
            page.click("#submit")
            page.wait_for_selector("#status.error")
            assert "not a supported image format" in page.inner_text("#status")
        finally:
            browser.close()
