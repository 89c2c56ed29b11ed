"""The wheel and the sdist installed non-editable, where the checkout is not importable, behave as
the checkout does: every CLI command the README shows, and the HTTP service.

Each artifact goes into a fresh ``python -m venv`` (deploy_support explains how the runtime
dependencies are borrowed without reinstalling torch), and every command runs through that
environment's own ``bin/zsindex`` from a directory outside the checkout.
"""

from __future__ import annotations

import base64
import json
import subprocess
import tomllib
from pathlib import Path

import httpx
import numpy as np
import pytest
from deploy_support import (
    PIP,
    Dists,
    FreshEnv,
    assert_not_from_checkout,
    clean_env,
    free_port,
    import_report,
    run,
    stop,
    wait_until_ready,
)
from dockerfile_model import ROOT

from zsindex.demo import render_shape

pytestmark = pytest.mark.timeout(300)

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
PETS = "red circle,blue square,green triangle"


def _installed(tmp_path: Path, artifact: Path) -> tuple[FreshEnv, Path]:
    env = FreshEnv.create(tmp_path / "venv")
    env.install(artifact)
    work = tmp_path / "work"  # every command runs here, outside the checkout
    work.mkdir()
    assert_not_from_checkout(import_report(env.python, work), env.root)
    checked = run([*PIP, "--python", env.python, "check"], cwd=work)
    assert "No broken requirements" in checked.stdout, checked.stdout
    # The build compiled the fp16 scan kernel, and the installed package imports it (this
    # machine has a C compiler, as the Dockerfile's builder stage does).
    probe = "from zsindex.index import f16; print(f16.compiled(), f16.available())"
    kernel = run([str(env.python), "-c", probe], cwd=work).stdout.split()
    assert kernel == ["True", "True"], f"installed zsindex: fp16 kernel compiled, usable = {kernel}"
    return env, work


def _cli(env: FreshEnv, work: Path, home: Path) -> tuple[dict[str, str], list[str]]:
    settings = {"ZSINDEX_HOME": str(home), "ZSINDEX_MODEL": "zsindex-tiny", "ZSINDEX_DEVICE": "cpu"}
    return clean_env(settings, path_first=env.bin), [str(env.bin / "zsindex")]


def _top(predictions: list[dict[str, object]]) -> list[tuple[object, float]]:
    return [(p["label"], round(float(str(p["probability"])), 5)) for p in predictions]


def _classify_pets(zsindex: list[str], environ: dict[str, str], work: Path, image: Path) -> object:
    out = run([*zsindex, "classify", image, "--labels", "pets", "--json"], cwd=work, env=environ)
    [result] = json.loads(out.stdout)
    assert result["labelset"] == "pets" and result["version"] == 1
    return result["predictions"]


def test_wheel_installed_runs_every_command_and_serves(dists: Dists, tmp_path: Path) -> None:
    env, work = _installed(tmp_path, dists.wheel)
    home = tmp_path / "home"
    environ, zsindex = _cli(env, work, home)

    version = run([*zsindex, "--version"], cwd=work, env=environ).stdout
    assert version.strip() == f"zsindex, version {VERSION}"
    assert "(head)" in run([*zsindex, "db", "upgrade"], cwd=work, env=environ).stderr

    demo = run([*zsindex, "demo"], cwd=work, env=environ, timeout=180)
    assert "label set shape-tree: version 1" in demo.stderr + demo.stdout
    # The red circle's row names "circle" first among the shapes (its percentage is the model's).
    row = next(line for line in demo.stdout.splitlines() if line.startswith("red-circle.png"))
    assert row.split()[1] == "circle", row
    images = home / "demo-images"
    assert len(list(images.glob("*.png"))) == 8

    added = run(
        [*zsindex, "labels", "add", "pets", "--labels", PETS, "--templates", "photo"],
        cwd=work,
        env=environ,
    )
    assert "registered pets version 1: 3 labels" in added.stdout + added.stderr
    installed = _classify_pets(zsindex, environ, work, images / "red-circle.png")
    assert isinstance(installed, list) and installed[0]["label"] == "red circle"
    # The same command from the checkout's own environment gives the same answer.
    checkout = _classify_pets(
        [str(ROOT / ".venv" / "bin" / "zsindex")], environ, work, images / "red-circle.png"
    )
    assert checkout == installed

    folder = tmp_path / "imagefolder"
    for label, name in (
        ("circle", "red-circle"),
        ("square", "blue-square"),
        ("star", "white-star"),
    ):
        (folder / label).mkdir(parents=True)
        (folder / label / f"{name}.png").write_bytes((images / f"{name}.png").read_bytes())
    scores = json.loads(
        run(
            [*zsindex, "eval", folder, "--labels", "shapes", "--json"], cwd=work, env=environ
        ).stdout
    )
    assert (scores["n"], scores["errors"], scores["top1"]) == (3, 0, 1.0), scores

    port = free_port()
    server = subprocess.Popen(
        [*zsindex, "serve", "--port", str(port)],
        cwd=work,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        ready = wait_until_ready(server, f"{base}/readyz")
        assert ready.json()["detail"]["store"] == "ok"
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()  # the shipped static page
        body = {
            "labelset": "pets",
            "k": 3,
            "images": [base64.b64encode((images / "red-circle.png").read_bytes()).decode()],
        }
        answer = httpx.post(f"{base}/v1/classify", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        [served] = answer.json()
        assert _top(served["predictions"]) == _top(installed)
    finally:
        stop(server)


def test_sdist_installed_builds_and_classifies(dists: Dists, tmp_path: Path) -> None:
    env, work = _installed(tmp_path, dists.sdist)  # pip builds the wheel from the sdist itself
    environ, zsindex = _cli(env, work, tmp_path / "home")
    assert VERSION in run([*zsindex, "--version"], cwd=work, env=environ).stdout
    assert "(head)" in run([*zsindex, "db", "upgrade"], cwd=work, env=environ).stderr
    run(
        [*zsindex, "labels", "add", "pets", "--labels", PETS, "--templates", "photo"],
        cwd=work,
        env=environ,
    )
    image = tmp_path / "blue-square.png"
    render_shape("square", "blue", 160, np.random.default_rng(7)).save(image)
    predictions = _classify_pets(zsindex, environ, work, image)
    assert isinstance(predictions, list) and len(predictions) == 3
    assert predictions[0]["label"] == "blue square", predictions
