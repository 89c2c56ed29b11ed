"""Built-in label-set plugins (entry points in zsindex's own ``pyproject.toml``).

- ``imagenet1k``: open_clip's 1000 ImageNet class names exactly as listed (``missile`` and
  ``sunglasses`` appear twice, so duplicates are declared) with the 80 OpenAI templates.
- ``imagenet1k-simple``: the same names with the 7 "simple" templates.
- ``cifar10`` / ``cifar100``: the CIFAR class names in torchvision's label order, written as
  OpenAI CLIP and CLIP_benchmark write them (underscores as spaces, e.g. "aquarium fish"), with the
  18 CIFAR templates (open_clip's metadata has no CIFAR lists).
- ``shapes``, ``colors``, ``shape-tree``: the synthetic world of ``zsindex-tiny``, with
  :data:`DEMO_TEMPLATES`. ``shape-tree`` has each shape as a root (rank ``shape``) with children
  "<colour> <shape>" (rank ``color``), in pre-order: "circle", "red circle", …, "square", ….

Nothing here imports torch: open_clip's metadata file is read on its own.
"""

from __future__ import annotations

from zsindex.labels import _openclip_meta
from zsindex.labels.demo_vocab import COLOR_NAMES, SHAPES
from zsindex.labels.spec import LabelSetSpec
from zsindex.labels.templates import CIFAR_TEMPLATES

DEMO_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a {}.")
"""Templates for the demo sets; tuned for the tiny demo model (change them here only)."""

CIFAR10_CLASSNAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

CIFAR100_CLASSNAMES: tuple[str, ...] = (
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak tree", "orange", "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow tree", "wolf", "woman", "worm",
)  # fmt: skip


def imagenet1k() -> LabelSetSpec:
    """open_clip's 1000 ImageNet class names with the 80 OpenAI templates."""
    return LabelSetSpec(
        names=_openclip_meta.imagenet_classnames(),
        templates=_openclip_meta.openai_imagenet_templates(),
        source="plugin:imagenet1k",
        allow_duplicates=True,
    )


def imagenet1k_simple() -> LabelSetSpec:
    """open_clip's 1000 ImageNet class names with the 7 simple templates."""
    return LabelSetSpec(
        names=_openclip_meta.imagenet_classnames(),
        templates=_openclip_meta.simple_imagenet_templates(),
        source="plugin:imagenet1k-simple",
        allow_duplicates=True,
    )


def cifar10() -> LabelSetSpec:
    """The 10 CIFAR-10 classes with the 18 CIFAR templates."""
    return LabelSetSpec(
        names=CIFAR10_CLASSNAMES, templates=CIFAR_TEMPLATES, source="plugin:cifar10"
    )


def cifar100() -> LabelSetSpec:
    """The 100 CIFAR-100 classes with the 18 CIFAR templates."""
    return LabelSetSpec(
        names=CIFAR100_CLASSNAMES, templates=CIFAR_TEMPLATES, source="plugin:cifar100"
    )


def shapes() -> LabelSetSpec:
    """The demo shapes (``circle``, ``square``, …)."""
    return LabelSetSpec(names=SHAPES, templates=DEMO_TEMPLATES, source="plugin:shapes")


def colors() -> LabelSetSpec:
    """The demo colour names (``red``, ``green``, …)."""
    return LabelSetSpec(names=COLOR_NAMES, templates=DEMO_TEMPLATES, source="plugin:colors")


def shape_tree() -> LabelSetSpec:
    """Shapes as roots, each with "<colour> <shape>" children (ranks ``shape``, ``color``)."""
    names: list[str] = []
    parents: list[int | None] = []
    for shape in SHAPES:
        root = len(names)
        names.append(shape)
        parents.append(None)
        for color in COLOR_NAMES:
            names.append(f"{color} {shape}")
            parents.append(root)
    return LabelSetSpec(
        names=tuple(names),
        parents=tuple(parents),
        templates=DEMO_TEMPLATES,
        rank_names=("shape", "color"),
        source="plugin:shape-tree",
    )
