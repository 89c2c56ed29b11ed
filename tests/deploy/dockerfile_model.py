"""A strict reader of the repository's Dockerfile and .dockerignore, for the tests that replay them.

Docker cannot run here, so tests/deploy/ runs the image's steps outside it. To keep those tests
from drifting away from the files, this reader understands exactly the instructions and shell
commands the Dockerfile uses and raises :class:`DockerfileError` on anything else: adding an
instruction or a command to the image means teaching this module (and the replay) about it.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# Instructions the final stage may use; anything else there fails the tests until taught.
FINAL_KEYWORDS = frozenset(
    {"FROM", "ENV", "RUN", "WORKDIR", "USER", "EXPOSE", "HEALTHCHECK", "CMD"}
)
BUILDER_KEYWORDS = frozenset({"FROM", "WORKDIR", "COPY", "RUN"})
# Shell commands the final stage's RUN may chain with `&&`.
FINAL_COMMANDS = frozenset({"pip", "useradd", "mkdir", "chown"})


class DockerfileError(AssertionError):
    """The Dockerfile or .dockerignore uses something the replay does not understand."""


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def where(self) -> str:
        return f"Dockerfile:{self.line}: {self.keyword}"


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def of(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.of(keyword)
        if len(found) != 1:
            raise DockerfileError(
                f"Dockerfile: expected one {keyword} in stage {self.name or 'final'}"
            )
        return found[0]


@dataclass(frozen=True)
class Mount:
    type: str
    from_stage: str
    source: str
    target: str


@dataclass(frozen=True)
class RunStep:
    mounts: tuple[Mount, ...]
    commands: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class FinalStage:
    base: str
    env: dict[str, str]
    runs: tuple[RunStep, ...]
    workdir: str
    user: str
    expose: int
    healthcheck_options: dict[str, str]
    healthcheck: tuple[str, ...]
    cmd: tuple[str, ...]


@dataclass(frozen=True)
class Builder:
    name: str
    base: str
    copies: tuple[str, ...]
    wheel_command: tuple[str, ...] = field(default=())

    @property
    def wheel_dir(self) -> str:
        return _option(self.wheel_command, "--wheel-dir")


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Instruction lines with continuations joined; comments and parser directives dropped."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, even inside a continuation
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(pending)))
        pending = []
    if pending:
        raise DockerfileError(f"Dockerfile:{start}: continuation runs past the end of the file")
    return lines


def parse_stages(text: str) -> list[Stage]:
    """The stages of a Dockerfile, with global ``ARG`` defaults substituted into ``FROM``."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    current: list[Instruction] | None = None
    base, name = "", None
    for line, logical in _logical_lines(text):
        keyword, _, rest = logical.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and current is None:
            key, sep, value = rest.partition("=")
            if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
                raise DockerfileError(f"Dockerfile:{line}: ARG before FROM needs NAME=default")
            args[key] = value
            continue
        if keyword == "FROM":
            if current is not None:
                stages.append(Stage(base, name, tuple(current)))
            parts = rest.split()
            if len(parts) not in (1, 3) or (len(parts) == 3 and parts[1].upper() != "AS"):
                raise DockerfileError(f"Dockerfile:{line}: FROM must be `FROM image [AS name]`")
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 else None
            current = [Instruction(keyword, rest, line)]
            continue
        if current is None:
            raise DockerfileError(f"Dockerfile:{line}: {keyword} before the first FROM")
        current.append(Instruction(keyword, rest, line))
    if current is None:
        raise DockerfileError("Dockerfile: no FROM")
    stages.append(Stage(base, name, tuple(current)))
    return stages


def _check_keywords(stage: Stage, allowed: frozenset[str]) -> None:
    for ins in stage.instructions:
        if ins.keyword not in allowed:
            raise DockerfileError(
                f"{ins.where()} is not understood by tests/deploy/dockerfile_model.py "
                f"(stage {stage.name or 'final'} may use {', '.join(sorted(allowed))}): teach it"
            )


def _exec_form(ins: Instruction, text: str) -> tuple[str, ...]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise DockerfileError(f"{ins.where()} must use the exec (JSON list) form")
    return tuple(value)


def _env(ins: Instruction) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for word in shlex.split(ins.args):
        key, sep, value = word.partition("=")
        if not sep or "$" in value:
            raise DockerfileError(f"{ins.where()} must be KEY=value pairs without $ expansion")
        pairs[key] = value
    return pairs


def _mount(ins: Instruction, flag: str) -> Mount:
    fields = dict(item.split("=", 1) for item in flag.removeprefix("--mount=").split(","))
    try:
        return Mount(fields["type"], fields["from"], fields["source"], fields["target"])
    except KeyError as missing:
        raise DockerfileError(f"{ins.where()}: --mount needs type, from, source, target") from (
            missing
        )


def _shell_words(text: str) -> list[str]:
    """Shell words, with operators (`&&`, `;`, `|`, `>`, ...) as words of their own."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def _run(ins: Instruction) -> RunStep:
    words = _shell_words(ins.args)
    mounts: list[Mount] = []
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if not flag.startswith("--mount="):
            raise DockerfileError(f"{ins.where()}: RUN flag {flag} is not understood")
        mounts.append(_mount(ins, flag))
    commands: list[tuple[str, ...]] = [()]
    for word in words:
        if word == "&&":
            commands.append(())
        elif set(word) <= set("();<>|&"):
            raise DockerfileError(f"{ins.where()}: only `&&` may join commands, not {word!r}")
        else:
            commands[-1] = (*commands[-1], word)
    for command in commands:
        if not command or command[0] not in FINAL_COMMANDS:
            raise DockerfileError(
                f"{ins.where()}: command {' '.join(command)!r} is not understood by "
                "tests/deploy/dockerfile_model.py: teach it (and its replay)"
            )
    return RunStep(tuple(mounts), tuple(commands))


def _healthcheck(ins: Instruction) -> tuple[dict[str, str], tuple[str, ...]]:
    options: dict[str, str] = {}
    rest = ins.args
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        key, _, value = flag[2:].partition("=")
        options[key] = value
        rest = rest.strip()
    kind, _, command = rest.partition(" ")
    if kind != "CMD":
        raise DockerfileError(f"{ins.where()} must be `HEALTHCHECK [options] CMD [...]`")
    return options, _exec_form(ins, command)


def _option(argv: tuple[str, ...], name: str) -> str:
    if argv.count(name) != 1 or argv.index(name) + 1 >= len(argv):
        raise DockerfileError(f"Dockerfile: {' '.join(argv)!r} needs exactly one {name} VALUE")
    return argv[argv.index(name) + 1]


def final_stage(text: str | None = None) -> FinalStage:
    stages = parse_stages(DOCKERFILE.read_text() if text is None else text)
    final = stages[-1]
    _check_keywords(final, FINAL_KEYWORDS)
    env: dict[str, str] = {}
    for ins in final.of("ENV"):
        env.update(_env(ins))
    expose = final.one("EXPOSE")
    if not expose.args.isdigit():
        raise DockerfileError(f"{expose.where()} must name one TCP port")
    options, health = _healthcheck(final.one("HEALTHCHECK"))
    return FinalStage(
        base=final.base,
        env=env,
        runs=tuple(_run(ins) for ins in final.of("RUN")),
        workdir=final.one("WORKDIR").args,
        user=final.one("USER").args,
        expose=int(expose.args),
        healthcheck_options=options,
        healthcheck=health,
        cmd=_exec_form(final.one("CMD"), final.one("CMD").args),
    )


def builder_stage(text: str | None = None) -> Builder:
    """The stage the final one mounts its wheel from, with its one `pip wheel` command."""
    stages = parse_stages(DOCKERFILE.read_text() if text is None else text)
    builder = stages[0]
    if len(stages) != 2 or builder.name is None:
        raise DockerfileError("Dockerfile: expected a named builder stage and a final stage")
    _check_keywords(builder, BUILDER_KEYWORDS)
    runs = [shlex.split(i.args) for i in builder.of("RUN")]
    if len(runs) != 1 or runs[0][:2] != ["pip", "wheel"] or "&&" in runs[0]:
        raise DockerfileError("Dockerfile: the builder stage must RUN exactly one `pip wheel ...`")
    return Builder(
        name=builder.name,
        base=builder.base,
        copies=tuple(i.args for i in builder.of("COPY")),
        wheel_command=tuple(runs[0]),
    )


@dataclass(frozen=True)
class IgnoreRules:
    """.dockerignore as an allowlist: ``*``, then ``!top-level-name`` lines, then ``**/glob``."""

    allowed: frozenset[str]
    excluded_names: tuple[str, ...]

    def keeps(self, relative: Path) -> bool:
        if relative.parts[0] not in self.allowed:
            return False
        return not any(
            fnmatch.fnmatchcase(part, glob)
            for part in relative.parts
            for glob in self.excluded_names
        )


def ignore_rules(text: str | None = None) -> IgnoreRules:
    lines = [
        line.strip()
        for line in (DOCKERIGNORE.read_text() if text is None else text).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    if not lines or lines[0] != "*":
        raise DockerfileError(".dockerignore: the first rule must be `*` (an allowlist follows)")
    allowed: set[str] = set()
    excluded: list[str] = []
    for line in lines[1:]:
        if line.startswith("!") and re.fullmatch(r"[\w.-]+", line[1:]):
            allowed.add(line[1:])
        elif line.startswith("**/") and "/" not in line[3:]:
            excluded.append(line[3:])
        else:
            raise DockerfileError(
                f".dockerignore: {line!r} is not understood by tests/deploy/dockerfile_model.py "
                "(use `!name` for a top-level entry or `**/glob` to drop a name anywhere)"
            )
    return IgnoreRules(frozenset(allowed), tuple(excluded))
