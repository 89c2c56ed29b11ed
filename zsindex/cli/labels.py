"""``zsindex labels``: register, import, inspect, export and delete label sets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from zsindex.cli.context import CliState
from zsindex.cli.output import EmbeddingProgress, info, print_json, print_table
from zsindex.results import LabelSetInfo

FORMATS = ("text", "csv", "json", "yaml", "taxonomy-csv")


@click.group()
def labels() -> None:
    """Register and manage label sets (class names, templates, trees)."""


def _row(ls: LabelSetInfo) -> list[object]:
    return [ls.name, ls.version, ls.num_labels, ls.depth, ls.model]


@labels.command("add")
@click.argument("name")
@click.option(
    "--file", "file_", type=click.Path(dir_okay=False, path_type=Path), help="Label file."
)
@click.option("--labels", "inline", help='Comma-separated labels, e.g. "dog,cat,bird".')
@click.option("--plugin", help="A label-set plugin (see `zsindex labels plugins`).")
@click.option("--format", "format_", type=click.Choice(FORMATS), help="Force the file format.")
@click.option(
    "--templates", help="Named template set (simple-7, openai-imagenet-80, photo) or a file."
)
@click.option("--model", help="Encoder model (default: ZSINDEX_MODEL).")
@click.option("--pretrained", help="Pretrained tag, hf-hub:, local-dir: or a weights file.")
@click.option(
    "--node-text",
    type=click.Choice(["name", "path"]),
    default="name",
    show_default=True,
    help="taxonomy-csv: embed each node by its own name or by its whole path.",
)
@click.option(
    "--allow-duplicates", is_flag=True, help="Keep duplicate labels (identified by position)."
)
@click.option(
    "--strict", is_flag=True, help="Prompts longer than the model's context are an error."
)
@click.option(
    "--index",
    "index_spec",
    help="Search index for this version: exact (default), ivf1024, hnsw32,fp16, ... "
    "(default: ZSINDEX_INDEX).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new version as JSON.")
@click.pass_obj
def add(
    state: CliState,
    name: str,
    file_: Path | None,
    inline: str | None,
    plugin: str | None,
    format_: str | None,
    templates: str | None,
    model: str | None,
    pretrained: str | None,
    node_text: str,
    allow_duplicates: bool,
    strict: bool,
    index_spec: str | None,
    as_json: bool,
) -> None:
    """Register label set NAME (a new version if it exists) from exactly one source."""
    from zsindex.cli.files import inline_labels, label_file, templates_option
    from zsindex.options import LabelSource

    sources = [s for s in (file_, inline, plugin) if s is not None]
    if len(sources) != 1:
        raise click.UsageError("give exactly one of --file, --labels or --plugin")
    if file_ is not None:
        source = label_file(
            file_,
            format_,
            node_text="path" if node_text == "path" else "name",
            allow_duplicates=allow_duplicates,
        )
    elif inline is not None:
        source = inline_labels(inline, allow_duplicates=allow_duplicates)
    else:
        source = LabelSource(plugin=plugin, allow_duplicates=allow_duplicates)
    chosen = templates_option(templates)
    bar = EmbeddingProgress()
    try:
        # A one-shot command: the model loads in a child process while this one parses.
        client = state.client(text_worker=True, progress=bar)
        result = client.backend.add_labelset(
            name,
            source,
            templates=chosen,
            model=model,
            pretrained=pretrained,
            strict=strict,
            index=index_spec,
        )
    finally:
        bar.close()
    if as_json:
        print_json(result.to_dict())
    elif result.unchanged:
        info(
            f"unchanged: {result.name} is already at version {result.version} with this "
            "content (nothing new was stored)"
        )
    else:
        info(
            f"registered {result.name} version {result.version}: {result.num_labels} labels, "
            f"model {result.model}"
        )


@labels.command("import")
@click.argument("name")
@click.option(
    "--embeddings",
    "embeddings_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A .npy array [N, dim] or [dim, N], float32 or float16.",
)
@click.option(
    "--names",
    "names_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Names: text, JSON list, CSV name,parent, or TreeOfLife JSON.",
)
@click.option("--model", required=True, help="The model the embeddings come from.")
@click.option("--pretrained", help="Its pretrained tag or weights path.")
@click.option(
    "--embed-internal",
    type=click.Choice(["mean", "text"]),
    default="mean",
    show_default=True,
    help="Tree nodes without a row: mean of descendants, or text.",
)
@click.option(
    "--index",
    "index_spec",
    help="Search index for this version: exact (default), ivf1024, hnsw32,fp16, ... "
    "(default: ZSINDEX_INDEX).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new version as JSON.")
@click.pass_obj
def import_(
    state: CliState,
    name: str,
    embeddings_path: Path,
    names_path: Path,
    model: str,
    pretrained: str | None,
    embed_internal: str,
    index_spec: str | None,
    as_json: bool,
) -> None:
    """Register precomputed label embeddings as label set NAME."""
    from zsindex.cli.files import names_file, read_npy

    names = names_file(names_path)
    matrix = read_npy(embeddings_path)
    result = state.client().backend.import_labelset(
        name,
        matrix,
        names,
        model=model,
        pretrained=pretrained,
        embed_internal=embed_internal,
        index=index_spec,
    )
    if as_json:
        print_json(result.to_dict())
    else:
        info(f"imported {result.name} version {result.version}: {result.num_labels} labels")


@labels.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(state: CliState, as_json: bool) -> None:
    """List label sets with their current version."""
    sets = state.client().labelsets()
    if as_json:
        print_json([s.to_dict(detail=False) for s in sets])
    elif sets:
        print_table(["name", "version", "labels", "depth", "model"], [_row(s) for s in sets])
    else:
        info('no label sets yet: add one with `zsindex labels add NAME --labels "a,b"`')


@labels.command("show")
@click.argument("name")
@click.option(
    "--version",
    "number",
    type=click.IntRange(min=1),
    help="Show this version instead of the current one (as NAME@N).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(state: CliState, name: str, number: int | None, as_json: bool) -> None:
    """Show a label set's current version (or NAME@N, --version N: version N): model,
    templates, counts, depth, digest."""
    from zsindex.labels.refs import parse_ref, pinned_key

    if number is not None:
        if parse_ref(name)[1] is not None:
            raise click.UsageError("give the version once: NAME@N or --version N")
        name = pinned_key(name, number)
    ls = state.client().labelset(name)
    if as_json:
        print_json(ls.to_dict())
        return
    for key, value in ls.to_dict().items():
        if key == "templates" and not value:
            # Own prompts per label, or imported embeddings: no template made them.
            click.echo("templates: none")
        elif key == "templates":
            click.echo(f"templates: {len(value)}")
            for t in value:
                click.echo(f"  {t}")
        elif key == "provenance":
            for line in _provenance_lines(value):
                click.echo(line)
        else:
            click.echo(f"{key}: {value}")


def _adapted(ls: LabelSetInfo) -> str:
    """One history cell: how a version was adapted (``tune v1 a=0.45, 12 ex; T=1.8``)."""
    parts = []
    tune = ls.provenance.get("tune")
    if isinstance(tune, dict):
        n = sum(tune.get("examples", {}).values())
        parts.append(f"tune of v{tune.get('source_version')} alpha={tune.get('alpha'):g}, {n} ex")
    if ls.temperature != 1.0:
        parts.append(f"T={ls.temperature:.4g}")
    return "; ".join(parts)


def _provenance_lines(provenance: dict[str, object]) -> list[str]:
    """``labels show``'s provenance block: the tuning's source version, alpha, example counts
    and image digests (12 characters; ``--json`` has them whole), the calibration's fit."""
    if not provenance:
        return ["provenance: none (registered from labels)"]
    lines = ["provenance:"]
    tune = provenance.get("tune")
    if isinstance(tune, dict):
        lines.append(
            f"  tune: from version {tune.get('source_version')}, alpha {tune.get('alpha'):g} "
            f"({tune.get('alpha_mode')})"
        )
        images = tune.get("images", {})
        for label, count in tune.get("examples", {}).items():
            digests = " ".join(d[:12] for d in images.get(label, []))
            lines.append(f"    {label}: {count} example(s)  {digests}")
    calibration = provenance.get("calibration")
    if isinstance(calibration, dict):
        lines.append(
            f"  calibration: from version {calibration.get('source_version')}, "
            f"T {calibration.get('temperature'):.4g} on {calibration.get('n')} images; "
            f"NLL {calibration.get('nll_before'):.4f} -> {calibration.get('nll_after'):.4f}, "
            f"ECE {calibration.get('ece_before'):.4f} -> {calibration.get('ece_after'):.4f}"
        )
        for target, p in (calibration.get("suggested_reject_below") or {}).items():
            shown = "none reaches it" if p is None else f"--reject-below {p:.4f}"
            lines.append(f"    precision {target}: {shown}")
    return lines


@labels.command("history")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def history(state: CliState, name: str, as_json: bool) -> None:
    """List every version of a label set, oldest first."""
    versions = state.client().history(name)
    if as_json:
        print_json([v.to_dict() for v in versions])
    else:
        print_table(
            [
                "version",
                "labels",
                "model",
                "created",
                "current",
                "digest",
                "adapted",
                "rollback of",
            ],
            [
                [
                    v.version,
                    v.num_labels,
                    v.model,
                    v.created_at,
                    "*" if v.current else "",
                    v.digest[:12],
                    _adapted(v),
                    v.rollback_of or "",
                ]
                for v in versions
            ],
        )


@labels.command("rollback")
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the new current version as JSON.")
@click.pass_obj
def rollback(state: CliState, name: str, version: int, as_json: bool) -> None:
    """Serve version VERSION of NAME again: its content is published atomically as a new
    current version (history records it; version numbers never go backwards)."""
    result = state.client().rollback(name, version)
    if as_json:
        print_json(result.to_dict())
    elif result.unchanged:
        info(
            f"unchanged: {result.name} version {result.version} already holds the content of "
            f"version {version} (nothing new was stored)"
        )
    else:
        info(f"rolled {result.name} back to version {version}: now version {result.version}")


@labels.command("tune")
@click.argument("name")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--alpha",
    default="auto",
    show_default=True,
    help="Blend in [0, 1] (0: text only, 1: image means only), or auto (leave-one-out).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new version as JSON.")
@click.pass_obj
def tune(state: CliState, name: str, directory: Path, alpha: str, as_json: bool) -> None:
    """Few-shot: a new version of NAME whose vectors blend each label's text embedding with the
    mean embedding of its example images in DIRECTORY (one folder per label; for trees a node
    name or a/b/c path of folders). Labels without examples keep their text vector; tuning
    again starts from the text vectors."""
    from zsindex.catalog.tuning import check_alpha
    from zsindex.cli.examples import read_examples

    checked = check_alpha(alpha)
    examples = read_examples(directory)
    ls = state.client().tune_labelset(name, examples, alpha=checked)
    if as_json:
        print_json(ls.to_dict())
        return
    tuned = ls.provenance.get("tune", {})
    counts = tuned.get("examples", {})
    info(
        f"tuned {ls.name} as version {ls.version} from version {tuned.get('source_version')}: "
        f"alpha {tuned.get('alpha'):g} ({tuned.get('alpha_mode')}), "
        f"{sum(counts.values())} examples of {len(counts)} labels"
    )


@labels.command("rm")
@click.argument("name")
@click.pass_obj
def rm(state: CliState, name: str) -> None:
    """Delete a label set and all its versions."""
    state.client().delete_labelset(name)
    info(f"deleted {name}")


@labels.command("export")
@click.argument("name")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def export(state: CliState, name: str, directory: Path) -> None:
    """Write DIRECTORY/embeddings.npy and DIRECTORY/names.json (readable by `labels import`)."""
    from zsindex.cli.files import write_export

    client = state.client()
    names, matrix = client.embeddings(name)
    tree = client.tree(name)
    listing: list[object] = list(names)
    if tree.is_tree:
        # A parent is named, or given by its row index where its name is not unique; a rank
        # travels with its node, and import rebuilds the rank names by depth from them.
        counts = Counter(names)
        listing = []
        for n, p, rank in zip(names, tree.parents, tree.ranks, strict=True):
            row: dict[str, object] = {
                "name": n,
                "parent": None if p < 0 else names[p] if counts[names[p]] == 1 else p,
            }
            if rank is not None:
                row["rank"] = rank
            listing.append(row)
    write_export(directory, matrix, listing)
    info(f"exported {len(names)} labels of {name} to {directory}")


@labels.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def plugins(state: CliState, as_json: bool) -> None:
    """List installed label-set plugins (entry points in `zsindex.labelsets`)."""
    from zsindex.labels.plugins import list_plugins

    found = list_plugins(state.settings.plugins)
    rows = [
        {"name": p.name, "distribution": p.distribution, "version": p.version, "allowed": p.allowed}
        for p in found
    ]
    if as_json:
        print_json(rows)
    else:
        print_table(
            ["name", "distribution", "version", "allowed"],
            [[r["name"], r["distribution"], r["version"], r["allowed"]] for r in rows],
        )
