"""``zsindex eval --plot FILE.png``: a reliability diagram and a confusion matrix.

Drawn with matplotlib's Agg backend (no display needed). The layout adapts to the number of
classes: up to 30 the confusion matrix names every class and prints the counts in the cells;
beyond, it shows row-normalised colours with a thinned set of tick labels, so 100 or 1,000
classes stay readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zsindex.catalog.calibration import ECE_BINS, reliability_bins
from zsindex.errors import InvalidInputError

CELL_TEXT_MAX = 30
"""Up to this many classes every cell shows its count."""
TICKS_MAX = 120
"""Beyond this many classes only every n-th class is named on the axes."""


def confusion(
    truth: list[str], predicted: list[str], classes: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Counts [true class, predicted class]; a prediction outside ``classes`` (another label
    of the set) goes to a last column ``(other)``."""
    index = {c: i for i, c in enumerate(classes)}
    other = any(p not in index for p in predicted)
    cols = [*classes, "(other)"] if other else list(classes)
    matrix = np.zeros((len(classes), len(cols)), dtype=np.int64)
    for t, p in zip(truth, predicted, strict=True):
        matrix[index[t], index.get(p, len(classes))] += 1
    return matrix, cols


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Draw ``report``'s reliability diagram and confusion matrix into ``path`` (PNG).

    Raises:
        InvalidInputError: the file cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["_samples"]
    classes = list(report["classes"])
    matrix, cols = confusion(samples["truth"], samples["predicted"], classes)
    n = len(classes)
    side = min(max(6.5, 0.17 * n + 3.0), 24.0)
    height = max(7.5, side)
    fig = plt.figure(figsize=(7.0 + side, height), dpi=100 if n <= 60 else 130)
    # The reliability panels keep their own size (about 5 + 1.8 inches) however tall the
    # confusion matrix grows; the rest of the left column stays empty.
    rest = max(height - 7.5, 0.01)
    grid = fig.add_gridspec(3, 2, width_ratios=[7.0, side], height_ratios=[5.0, 1.8, rest])
    _reliability(fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0]), report, samples)
    _confusion(fig.add_subplot(grid[:, 1]), matrix, classes, cols, fig)
    fig.suptitle(
        f"{report['labelset']} v{report['version']}: {report['n']} images, top-1 "
        f"{report['top1']:.3f}, ECE {report['ece']:.3f}, NLL {report['nll']:.3f}, "
        f"Brier {report['brier']:.3f}",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot write the plot ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)


def _reliability(ax: Any, hist: Any, report: dict[str, Any], samples: dict[str, Any]) -> None:
    bins = reliability_bins(np.array(samples["confidence"]), np.array(samples["correct"]))
    width = 1.0 / ECE_BINS
    centres = np.array([(b.lo + b.hi) / 2 for b in bins])
    acc = np.array([b.accuracy for b in bins])
    conf = np.array([b.confidence for b in bins])
    filled = np.array([b.count > 0 for b in bins])
    ax.bar(
        centres[filled],
        acc[filled],
        width=width * 0.95,
        color="#4c72b0",
        edgecolor="black",
        linewidth=0.5,
        label="accuracy",
    )
    ax.bar(
        centres[filled],
        (conf - acc)[filled],
        bottom=acc[filled],
        width=width * 0.95,
        color="#dd8452",
        alpha=0.55,
        edgecolor="#c44e52",
        linewidth=0.5,
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability ({ECE_BINS} bins): ECE {report['ece']:.3f}")
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    counts = [b.count for b in bins]
    hist.bar(centres, counts, width=width * 0.95, color="#8c8c8c")
    hist.set_xlim(0, 1)
    hist.set_xlabel("top probability (confidence)")
    hist.set_ylabel("images")


def _confusion(ax: Any, matrix: np.ndarray, classes: list[str], cols: list[str], fig: Any) -> None:
    n = len(classes)
    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.maximum(rows, 1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share of the true class")
    step = 1 if n <= TICKS_MAX else int(np.ceil(n / TICKS_MAX))
    font = 10 if n <= 12 else 8 if n <= 30 else 6
    ax.set_yticks(range(0, n, step))
    ax.set_yticklabels([_short(classes[i]) for i in range(0, n, step)], fontsize=font)
    xt = list(range(0, len(cols), step))
    if cols[-1] == "(other)" and xt[-1] != len(cols) - 1:
        xt.append(len(cols) - 1)
    ax.set_xticks(xt)
    ax.set_xticklabels([_short(cols[i]) for i in xt], fontsize=font, rotation=90)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    title = "Confusion matrix (rows normalised)"
    if step > 1:
        title += f"; one class in {step} named"
    ax.set_title(title)
    if n <= CELL_TEXT_MAX:
        for i in range(n):
            for j in range(len(cols)):
                if matrix[i, j]:
                    dark = share[i, j] > 0.5
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=font,
                        color="white" if dark else "black",
                    )


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
