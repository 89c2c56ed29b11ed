"""Example zsindex label-set plugins: ``fruits`` (flat) and ``fruit-tree`` (a two-level tree).

Each entry point names a function taking no arguments. Importing this module must stay cheap and
side-effect free: zsindex imports it only when the plugin is used and allowed.
"""

from __future__ import annotations

FRUITS: tuple[str, ...] = ("apple", "banana", "cherry", "grape", "lemon", "orange", "pear")


def fruits() -> dict[str, object]:
    """A flat label set with its own templates (used when the user gives none)."""
    return {
        "labels": list(FRUITS),
        "templates": ["a photo of a {}, a type of fruit.", "a close-up photo of a {}."],
    }


def fruit_tree() -> dict[str, object]:
    """A tree: fruit families with their fruits, via a child -> parent mapping."""
    families = {
        "citrus": ["lemon", "orange"],
        "berry": ["grape", "banana"],
        "pome": ["apple", "pear"],
        "drupe": ["cherry"],
    }
    parents = {fruit: family for family, members in families.items() for fruit in members}
    return {
        # Every node is a label, the families (parents) included.
        "labels": [*families, *(fruit for members in families.values() for fruit in members)],
        "parents": parents,
        "rank_names": ["family", "fruit"],
        "templates": "photo",
    }
