"""Reading a folder of labelled example images (``labels tune``, ``calibrate``).

ImageFolder layout: each image's label is the folder it sits in, relative to DIR — ``DIR/cat/1.png``
is a ``cat``; for trees ``DIR/circle/red/1.png`` names the node ``circle/red`` (a node name or
an ``a/b/c`` path, as ``--within`` takes it). Hidden files and folders are skipped. The images
stay paths: the pipeline reads, checks and names them.
"""

from __future__ import annotations

from pathlib import Path

from zsindex.errors import InvalidInputError


def read_examples(directory: Path) -> dict[str, list[Path]]:
    """``{label: [image paths]}`` in sorted order.

    Raises:
        InvalidInputError: files directly in DIR, a class folder without files, or fewer than
            two class folders.
    """
    if not directory.is_dir():
        raise InvalidInputError(f"{directory}: not a folder (ImageFolder layout expected)")
    out: dict[str, list[Path]] = {}
    loose: list[str] = []
    folders: list[Path] = []
    for path in sorted(directory.rglob("*")):
        parts = path.relative_to(directory).parts
        if any(p.startswith(".") for p in parts):
            continue
        if path.is_dir():
            folders.append(path)
        elif len(parts) == 1:
            loose.append(parts[0])
        else:
            out.setdefault("/".join(parts[:-1]), []).append(path)
    if loose:
        raise InvalidInputError(
            f"{directory}: {loose[0]} is not in a class folder; put each image in a folder "
            "named after its label (DIR/LABEL/image.png)"
        )
    for folder in folders:
        label = "/".join(folder.relative_to(directory).parts)
        has_sub = any(other.parent == folder for other in folders)
        if label not in out and not has_sub:
            raise InvalidInputError(f"{folder}: empty class folder (give it images or remove it)")
    if not out:
        raise InvalidInputError(f"{directory}: no class folders with images")
    if len(out) < 2:
        raise InvalidInputError(
            f"{directory}: only one class folder ({next(iter(out))}); give examples of at "
            "least 2 labels, one folder each"
        )
    return out
