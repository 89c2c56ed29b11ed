"""Build zsindex's distributions and install them, non-editable, into fresh environments.

A fresh environment is a ``python -m venv`` in a temporary directory with the built artifact
installed by pip, never the source tree. Its runtime dependencies (torch and the rest) are not
installed again (minutes and gigabytes on this machine): a ``.pth`` file adds this environment's
site-packages as a plain path entry. A path line only appends to ``sys.path``; the ``.pth`` files
*inside* that directory (the editable install's finder among them) are not processed, so the
checkout stays unimportable, which :func:`import_report` lets each test check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from dockerfile_model import ROOT, builder_stage, ignore_rules

PIP = (sys.executable, "-m", "pip")
DEV_SITE_PACKAGES = tuple(
    dict.fromkeys(Path(sysconfig.get_path(key)).resolve() for key in ("purelib", "platlib"))
)
# What the replay adds to the image's own pip flags: dependencies come through the .pth file
# (--no-deps), setuptools from this environment (--no-build-isolation; no index is reachable), and
# the editable zsindex this environment shows through that same .pth is not "already installed"
# (--ignore-installed: otherwise pip would try to uninstall it before installing).
REPLAY_PIP_FLAGS = ("--no-deps", "--no-build-isolation", "--ignore-installed", "-q")


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@dataclass(frozen=True)
class Dists:
    context: Path  # the tree as the Docker build context holds it (.dockerignore applied)
    wheel: Path  # built from the context as the Dockerfile's builder stage builds it
    sdist: Path
    wheel_from_sdist: Path


def copy_context(dest: Path) -> Path:
    """Copy the checkout's files that .dockerignore lets into a Docker build context."""
    rules = ignore_rules()
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if path.is_file() and rules.keeps(relative):
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / relative)
    return dest


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {folder}, found {found}"
    return found[0]


def build_dists(base: Path) -> Dists:
    """The wheel (by the builder stage's own `pip wheel`), the sdist, and a wheel from the sdist."""
    context = copy_context(base / "context")
    builder = builder_stage()
    out = base / "dist"
    # The builder's command as written, run on the copied context: only its output folder moves.
    assert builder.wheel_command[-1] == ".", "the builder's pip wheel must build the context (.)"
    argv = [*PIP, *builder.wheel_command[1:], "--no-build-isolation", "-q"]
    argv[argv.index("--wheel-dir") + 1] = str(out)
    run(argv, cwd=context, timeout=300)
    run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", out], cwd=context)
    from_sdist = base / "from-sdist"
    sdist = _one(out, "zsindex-*.tar.gz")
    no_index = ("--no-deps", "--no-build-isolation", "-q")
    run([*PIP, "wheel", *no_index, "-w", from_sdist, sdist], cwd=base, timeout=300)
    return Dists(context, _one(out, "zsindex-*.whl"), sdist, _one(from_sdist, "zsindex-*.whl"))


@dataclass(frozen=True)
class FreshEnv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def site_packages(self) -> Path:
        [found] = (self.root / "lib").glob("python3.*/site-packages")
        return found

    @classmethod
    def create(cls, root: Path, base_python: str | Path = sys.executable) -> FreshEnv:
        run([base_python, "-m", "venv", "--without-pip", root], cwd=root.parent)
        env = cls(root)
        lines = "".join(f"{p}\n" for p in DEV_SITE_PACKAGES)
        (env.site_packages / "zsindex-test-runtime-deps.pth").write_text(lines)
        return env

    def install(self, artifact: Path, *image_flags: str) -> None:
        """``pip install`` the artifact into this environment (this checkout's pip, run by
        ``--python`` under the fresh interpreter), with the image's flags plus the replay's."""
        run(
            [*PIP, "--python", self.python, "install", *image_flags, *REPLAY_PIP_FLAGS, artifact],
            cwd=self.root,
            timeout=300,
        )


IMPORT_REPORT = """
import importlib.util, json, os, sys
import zsindex
print(json.dumps({
    "zsindex": zsindex.__file__,
    "migrations": importlib.util.find_spec("zsindex.migrations").origin,
    "top_level_migrations": importlib.util.find_spec("migrations") is not None,
    "path": [os.path.realpath(p or os.getcwd()) for p in sys.path],
    "meta_path": [repr(f) for f in sys.meta_path],
}))
"""


def import_report(python: Path, cwd: Path, prefix: Sequence[str] = ()) -> dict[str, object]:
    """Where the fresh interpreter imports zsindex from, run from ``cwd`` (outside the checkout)."""
    out = run([*prefix, python, "-c", IMPORT_REPORT], cwd=cwd, env=clean_env({})).stdout
    report: dict[str, object] = json.loads(out)
    return report


def assert_not_from_checkout(report: Mapping[str, object], env_root: Path) -> None:
    for key in ("zsindex", "migrations"):
        origin = Path(str(report[key]))
        assert origin.is_relative_to(env_root), f"{key} imported from {origin}, not {env_root}"
    assert report["top_level_migrations"] is False, "the checkout's migrations/ is importable"
    allowed = {str(p) for p in DEV_SITE_PACKAGES}
    paths = report["path"]
    assert isinstance(paths, list)
    for entry in paths:
        resolved = Path(entry)  # resolved by the fresh interpreter, in its own directory
        inside = resolved == ROOT or resolved.is_relative_to(ROOT)
        assert not inside or str(resolved) in allowed, f"sys.path reaches the checkout: {entry}"
    finders = report["meta_path"]
    assert isinstance(finders, list)
    assert not [f for f in finders if "editable" in str(f).lower()], finders


def clean_env(extra: Mapping[str, str], path_first: Path | None = None) -> dict[str, str]:
    """This process's environment without ZSINDEX_* and Python path settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ZSINDEX_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ready(proc: subprocess.Popen[str], url: str, timeout: float = 90) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited {proc.returncode}:\n{proc.communicate()[0]}")
        try:
            last = httpx.get(url, timeout=2)
            if last.status_code == 200:
                return last
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} not ready within {timeout:.0f} s (last: {last})")


def stop(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    """SIGTERM the server (as `docker stop` does) and wait for it; SIGKILL and fail if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the server did not exit within {timeout:.0f} s of SIGTERM") from None
