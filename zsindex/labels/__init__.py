"""Label sets: parsing, validation, templates and plugins (pure: no database, no model).

Importing this package never imports torch or open_clip.

Entry points for the rest of zsindex:

- :func:`parse_labels_file`, :func:`parse_labels_text`, :func:`parse_inline` — label files and
  ``--labels``; :func:`build_labelset` — Python/JSON structures (``Client.add_labelset``, HTTP).
- :func:`parse_names_file` — names for ``labels import`` (with the row → node mapping).
- :func:`load_plugin`, :func:`list_plugins` — entry-point plugins under the allow-list.
- :func:`resolve_templates` — ``--templates NAME_OR_PATH``.
- :func:`validate_labelset_name`, :func:`validate_spec`.
"""

from __future__ import annotations

from zsindex.labels.build import build_labelset
from zsindex.labels.formats import (
    LABEL_FORMATS,
    detect_format,
    parse_inline,
    parse_labels_file,
    parse_labels_text,
)
from zsindex.labels.names import NAMES_FORMATS, NamesSpec, parse_names_file, parse_names_text
from zsindex.labels.plugins import (
    ENTRY_POINT_GROUP,
    PLUGIN_LIMITS,
    PluginInfo,
    list_plugins,
    load_plugin,
)
from zsindex.labels.spec import LabelNode, LabelSetSpec
from zsindex.labels.templates import (
    DEFAULT_TEMPLATES,
    TEMPLATE_SET_NAMES,
    fill_template,
    resolve_templates,
    template_set,
    validate_templates,
)
from zsindex.labels.validate import (
    DEFAULT_LIMITS,
    Limits,
    validate_labelset_name,
    validate_spec,
)

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_TEMPLATES",
    "ENTRY_POINT_GROUP",
    "LABEL_FORMATS",
    "NAMES_FORMATS",
    "PLUGIN_LIMITS",
    "TEMPLATE_SET_NAMES",
    "LabelNode",
    "LabelSetSpec",
    "Limits",
    "NamesSpec",
    "PluginInfo",
    "build_labelset",
    "detect_format",
    "fill_template",
    "list_plugins",
    "load_plugin",
    "parse_inline",
    "parse_labels_file",
    "parse_labels_text",
    "parse_names_file",
    "parse_names_text",
    "resolve_templates",
    "template_set",
    "validate_labelset_name",
    "validate_spec",
    "validate_templates",
]
