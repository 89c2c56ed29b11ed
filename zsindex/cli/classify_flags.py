"""The command-line options of one classification, shared by ``classify`` and ``batch``.

Both commands take the same ``-k``, ``--mode``, ``--rank``, ``--beam``, ``--within``,
``--min-confidence``, ``--sigmoid`` and ``--reject-below`` (one :class:`ClassifyOptions`), and the
same ``--fast-decode/--exact-decode``; declaring them once keeps their names, ranges and help
identical. The rules between options (a tree option on a flat set…) are checked by
:meth:`ClassifyOptions.check`, as on every other interface.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from zsindex.options import MAX_BEAM, MAX_K, MODES, ClassifyOptions, Mode

F = TypeVar("F", bound=Callable[..., Any])

_OPTION_FLAGS = ("k", "mode", "rank", "beam", "within", "min_confidence", "sigmoid", "reject_below")


def classify_options(command: F) -> F:
    """Add the options of one classification; ``command`` receives them as one
    ``options: ClassifyOptions`` keyword (already checked)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in _OPTION_FLAGS}
        options = ClassifyOptions(
            k=flags["k"],
            mode=cast(Mode, flags["mode"]),
            rank=flags["rank"],
            beam=flags["beam"],
            within=flags["within"],
            min_confidence=flags["min_confidence"],
            activation="sigmoid" if flags["sigmoid"] else "softmax",
            reject_below=flags["reject_below"],
        ).check()
        return command(*args, options=options, **kwargs)

    decorators = [
        click.option(
            "-k",
            "k",
            default=5,
            show_default=True,
            type=click.IntRange(1, MAX_K),
            help="Predictions per image.",
        ),
        click.option(
            "--mode",
            type=click.Choice(MODES),
            default="flat",
            show_default=True,
            help="flat (leaves), pruned (flat's exact top k, bound-pruned), beam "
            "(coarse-then-fine), marginal or chils (trees).",
        ),
        click.option("--rank", help="Stop at this named rank or depth (tree modes)."),
        click.option(
            "--beam",
            type=click.IntRange(1, MAX_BEAM),
            help="Nodes kept per level (beam mode; default: adaptive, at least 8).",
        ),
        click.option(
            "--within", help="Restrict to the subtree of this node (name or a/b/c path; trees)."
        ),
        click.option(
            "--min-confidence",
            type=click.FloatRange(0, 1),
            help="Stop at the deepest node with at least this probability (tree modes).",
        ),
        click.option(
            "--sigmoid",
            is_flag=True,
            help="Multi-label sigmoid probabilities instead of softmax (flat mode).",
        ),
        click.option(
            "--reject-below",
            type=click.FloatRange(0, 1),
            help='"None of these": mark results whose top probability is below P as rejected.',
        ),
    ]
    decorated: Callable[..., Any] = wrapper
    for add in reversed(decorators):  # click lists options in the order they are applied
        decorated = add(decorated)
    return cast(F, decorated)


def fast_decode_option(command: F) -> F:
    """``--fast-decode/--exact-decode`` (``None`` when neither is given: the setting decides)."""
    return click.option(
        "--fast-decode/--exact-decode",
        default=None,
        help="Decode JPEGs at a reduced scale (faster, not bit-exact; default: "
        "ZSINDEX_FAST_DECODE, off).",
    )(command)
