"""The image as built, replayed outside Docker (no engine and no registry here).

The Dockerfile is read by tests/deploy/dockerfile_model.py, which refuses anything it does not
understand, and its final stage is replayed step by step: the wheel the builder stage's command
builds is installed as the final stage installs it, the user, directories, ENV and WORKDIR are
mapped onto a scratch directory, then the migrate step (`zsindex db upgrade`) and the image's
own CMD run as a non-root user against the local PostgreSQL, and the image's HEALTHCHECK command
is run until it passes. Only the bind address and port are substituted; nothing is copied.
"""

from __future__ import annotations

import fnmatch
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import httpx
import numpy as np
import pytest
from deploy_support import (
    Dists,
    FreshEnv,
    assert_not_from_checkout,
    free_port,
    import_report,
    run,
    stop,
)
from dockerfile_model import (
    DockerfileError,
    FinalStage,
    builder_stage,
    final_stage,
    parse_stages,
)

from zsindex.demo import render_shape

pytestmark = pytest.mark.timeout(300)

BUILD_TOOLS = {"gcc", "g++", "cc", "c++", "clang", "make", "cmake", "build-essential", "cargo"}
PACKAGE_MANAGERS = {"apt", "apt-get", "apk", "dnf", "yum", "microdnf"}


def _port_of(argv: tuple[str, ...]) -> str:
    return argv[argv.index("--port") + 1]


def test_dockerfile_is_multi_stage_pinned_and_lean() -> None:
    builder, final = builder_stage(), final_stage()
    pinned = re.fullmatch(
        r"python:(\d+)\.(\d+)\.(\d+)-slim-([a-z]+)(@sha256:[0-9a-f]{64})?", final.base
    )
    assert pinned, f"base {final.base!r} is not pinned to an exact python patch release"
    # The builder is the same release on the same Debian, in the full variant (its C compiler
    # builds the fp16 scan kernel into the wheel, which the slim final stage then runs).
    version, debian = ".".join(pinned.group(1, 2, 3)), pinned[4]
    assert re.fullmatch(
        rf"python:{re.escape(version)}-{debian}(@sha256:[0-9a-f]{{64}})?", builder.base
    ), f"builder base {builder.base!r} is not python:{version}-{debian}, the final stage's release"
    assert (int(pinned[1]), int(pinned[2])) >= (3, 11), "pyproject requires Python >= 3.11"
    # Nothing reaches the final stage from the builder but its folder of wheels, and the builder
    # puts only zsindex's own wheel there.
    assert "--no-deps" in builder.wheel_command
    mounts = [m for step in final.runs for m in step.mounts]
    assert [(m.type, m.from_stage, m.source) for m in mounts] == [
        ("bind", builder.name, builder.wheel_dir)
    ]
    words = {w for step in final.runs for command in step.commands for w in command}
    assert not words & (BUILD_TOOLS | PACKAGE_MANAGERS), "build tools in the final stage"
    # Exec form straight into zsindex (PID 1 gets SIGTERM), as a non-root user, on the EXPOSEd
    # port, with the health check asking the same port for readiness.
    assert final.cmd[:2] == ("zsindex", "serve") and final.cmd[0] not in ("sh", "bash")
    assert final.cmd[final.cmd.index("--host") + 1] == "0.0.0.0"
    assert _port_of(final.cmd) == str(final.expose)
    assert final.healthcheck[0] == "python"
    assert f"127.0.0.1:{final.expose}/readyz" in " ".join(final.healthcheck)
    assert final.user not in ("root", "0")
    assert set(final.healthcheck_options) <= {"interval", "timeout", "start-period", "retries"}


@pytest.mark.parametrize(
    "final_lines",
    [
        "COPY --from=builder /src /src",
        "RUN apt-get update && apt-get install -y gcc",
        "RUN pip install /dist/*.whl; rm -rf /dist",
        "CMD zsindex serve --host 0.0.0.0 --port 8000",
        "VOLUME /data",
        "ENV ZSINDEX_HOME=$HOME",
    ],
)
def test_the_reader_refuses_what_the_replay_does_not_understand(final_lines: str) -> None:
    text = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text() + final_lines + "\n"
    assert len(parse_stages(text)) == 2
    with pytest.raises(DockerfileError):
        final_stage(text)


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", value)
    assert match, f"HEALTHCHECK duration {value!r}"
    return float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match[2]]


@dataclass
class Replay:
    """The final stage's files and user, mapped onto ``base`` (container path -> base/rootfs)."""

    base: Path
    final: FinalStage
    run_as: list[str] = field(default_factory=list)  # setpriv prefix when this process is root
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    user: str | None = None
    home: Path | None = None
    env_python: FreshEnv | None = None

    def mapped(self, container_path: str) -> Path:
        assert container_path.startswith("/"), container_path
        return self.base / "rootfs" / PurePosixPath(container_path).relative_to("/")

    def environment(self, deployment: dict[str, str]) -> dict[str, str]:
        assert self.env_python is not None and self.home is not None
        env = {
            "PATH": f"{self.env_python.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
        }
        for key, value in self.final.env.items():
            env[key] = str(self.mapped(value)) if value.startswith("/") else value
        env.update(deployment)
        return env


def _non_root(replay: Replay) -> None:
    if os.geteuid() != 0:
        return  # already an unprivileged user: run as ourselves
    nobody = pwd.getpwnam("nobody")
    replay.uid, replay.gid = nobody.pw_uid, nobody.pw_gid
    replay.run_as = ["setpriv", f"--reuid={replay.uid}", f"--regid={replay.gid}", "--clear-groups"]


def _interpreter(replay: Replay) -> str:
    """A Python of this minor release (the image's) that the unprivileged user can run: a system
    one first, as the image has; this environment's own may sit under a home it cannot enter."""
    if not replay.run_as:
        return sys.executable
    ours = ".".join(map(str, sys.version_info[:3]))
    minor = ".".join(map(str, sys.version_info[:2]))
    candidates = {
        f"/usr/local/bin/python{minor}": minor,
        f"/usr/bin/python{minor}": minor,
        os.path.realpath(sys.executable): ours,
    }
    show = "import sys, venv; print(*sys.version_info[:3], sep='.')"
    for candidate, wanted in candidates.items():
        try:
            probe = run([*replay.run_as, candidate, "-c", show], cwd=replay.base, check=False)
        except OSError:
            continue
        version = probe.stdout.strip()
        if probe.returncode == 0 and (version == wanted or version.startswith(f"{wanted}.")):
            return candidate
    raise AssertionError(f"no Python {minor} the unprivileged user can run among {candidates}")


def _replay_runs(replay: Replay, dists: Dists) -> None:
    for step in replay.final.runs:
        wheel_dirs = {m.target for m in step.mounts}
        for command in step.commands:
            name, args = command[0], command[1:]
            if name == "pip":
                assert args[0] == "install", command
                [wheel] = [a for a in args if a.endswith(".whl")]
                folder, pattern = wheel.rsplit("/", 1)
                assert folder in wheel_dirs and fnmatch.fnmatch(dists.wheel.name, pattern), command
                flags = [a for a in args[1:] if a != wheel]
                assert set(flags) <= {"--no-cache-dir"}, f"teach the replay pip flags {flags}"
                replay.env_python = FreshEnv.create(replay.base / "python", _interpreter(replay))
                replay.env_python.install(dists.wheel, *flags)
            elif name == "useradd":
                replay.user = args[-1]
                replay.home = replay.mapped(args[args.index("--home-dir") + 1])
            elif name == "mkdir":
                assert args[0] == "-p" and len(args) == 2, command
                replay.mapped(args[1]).mkdir(parents=True, exist_ok=True)
            elif name == "chown":
                owner, target = args
                assert owner in (replay.user, f"{replay.user}:{replay.user}"), command
                os.chown(replay.mapped(target), replay.uid, replay.gid)
            else:  # pragma: no cover - dockerfile_model refuses other commands first
                raise AssertionError(f"no replay for {command}")


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Not tmp_path: pytest's folders are mode 700 and the unprivileged user must traverse this one.
    base = Path(tempfile.mkdtemp(prefix="zsindex-image-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _traversable_by_others(path: Path) -> Path | None:
    """The first folder above ``path`` that other users cannot enter, if any."""
    for folder in [path, *path.parents]:
        if folder.is_dir() and not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None


@pytest.mark.postgres
def test_final_stage_replayed_as_non_root_against_postgres(
    dists: Dists, pg_url: str, scratch: Path
) -> None:
    # The replay's dependencies come from this checkout's venv (a .pth file), which the
    # unprivileged user must be able to read: say so plainly instead of a missing module.
    closed = _traversable_by_others(Path(sys.prefix).resolve())
    if closed is not None:
        pytest.fail(
            f"{closed} is mode {stat.S_IMODE(closed.stat().st_mode):o}: the non-root replay "
            f"imports this venv's packages as 'nobody'; run the tests from a checkout other "
            f"users can traverse (chmod o+x {closed})"
        )
    final = final_stage()
    replay = Replay(scratch, final)
    _non_root(replay)
    _replay_runs(replay, dists)
    assert replay.env_python is not None and replay.user == final.user, "USER is the useradd user"
    workdir = replay.mapped(final.workdir)
    workdir.mkdir(parents=True, exist_ok=True)  # WORKDIR creates it
    # What docker-compose.yml adds to the image: the database, and a CPU-only device.
    env = replay.environment({"ZSINDEX_DATABASE_URL": pg_url, "ZSINDEX_DEVICE": "cpu"})

    def as_user(
        *argv: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([*replay.run_as, *argv], cwd=workdir, env=env, timeout=timeout, check=check)

    report = import_report(replay.env_python.python, workdir, replay.run_as)
    assert_not_from_checkout(report, replay.env_python.root)
    assert as_user("python", "-c", "import os; print(os.getuid())").stdout.strip() != "0"

    assert "(head)" in as_user("zsindex", "db", "upgrade").stderr  # the compose `migrate` step
    as_user("zsindex", "labels", "add", "shapes", "--plugin", "shapes", "--model", "zsindex-tiny")

    port = free_port()
    listen = f"127.0.0.1:{final.expose}"
    health = [a.replace(listen, f"127.0.0.1:{port}") for a in final.healthcheck]
    assert health != list(final.healthcheck), "the health check must name the EXPOSEd port"
    # The check's own timeout is the Dockerfile's (urlopen's); the process gets slack on top for
    # starting Python on this shared machine.
    timeout = _seconds(final.healthcheck_options.get("timeout", "30s"))
    assert as_user(*health, timeout=timeout + 30, check=False).returncode != 0, (
        "healthy before start?"
    )

    cmd = list(final.cmd)
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    cmd[cmd.index("--port") + 1] = str(port)
    server = subprocess.Popen(
        [*replay.run_as, *cmd],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        opts = final.healthcheck_options
        budget = _seconds(opts.get("start-period", "0s")) + _seconds(
            opts.get("interval", "30s")
        ) * int(opts.get("retries", "3"))
        deadline = time.monotonic() + max(budget, 60)
        while as_user(*health, timeout=timeout + 30, check=False).returncode != 0:
            assert server.poll() is None, (
                f"CMD exited {server.returncode}:\n{server.communicate()[0]}"
            )
            assert time.monotonic() < deadline, "the HEALTHCHECK never passed"
            time.sleep(0.5)
        png = scratch / "red-circle.png"
        render_shape("circle", "red", 128, np.random.default_rng(3)).save(png)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/classify",
            data={"labelset": "shapes", "k": "2"},
            files={"images": ("red-circle.png", png.read_bytes(), "image/png")},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        [result] = answer.json()
        assert result["predictions"][0]["label"] == "circle", result
        home = replay.mapped(final.env["ZSINDEX_HOME"])
        assert home.stat().st_uid == replay.uid, "the data folder is not the user's"
        # Whatever the server wrote there (index caches of large sets) is the user's too.
        owners = {p.stat().st_uid for p in home.rglob("*")}
        assert owners <= {replay.uid}, "the server wrote its data as someone else"
    finally:
        code = stop(server)  # SIGTERM straight to the CMD's process, as `docker stop` sends it
    assert code == 0, f"the server exited {code} on SIGTERM:\n{server.communicate()[0]}"
