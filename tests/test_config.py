"""Settings from the environment: every variable, its default, its bad values; read in one place."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from zsindex.config import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    BatchingConfig,
    NetworkSettings,
    ServiceLimits,
    Settings,
    network_from_env,
)
from zsindex.errors import InvalidInputError
from zsindex.service.batching import BatchingConfig as BatchingFromService
from zsindex.service.limits import ServiceLimits as LimitsFromService

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "zsindex"
CONFIG = PACKAGE / "config.py"


def test_defaults_with_an_empty_environment(tmp_path: Path) -> None:
    s = Settings.from_env({"XDG_DATA_HOME": str(tmp_path)})
    assert s.home == tmp_path / "zsindex"
    assert s.database_url is None
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'zsindex' / 'zsindex.sqlite3'}"
    assert (s.model, s.pretrained, s.device) == (DEFAULT_MODEL, DEFAULT_PRETRAINED, "auto")
    assert s.api_keys == () and s.plugins is None and s.require_auth_for_reads is False
    assert s.limits == ServiceLimits()
    assert s.limits.max_body_bytes == 32 * 1024 * 1024
    assert s.limits.max_images_per_request == 64
    assert s.limits.max_embeddings_per_request == 4096
    assert s.limits.max_image_pixels == 64_000_000
    assert s.limits.max_concurrency == 32
    assert s.limits.request_timeout_s == 60.0
    assert s.batching == BatchingConfig(
        enabled=True, max_batch_images=32, max_wait_s=0.004, model_workers=1, torch_threads=None
    )
    assert s.refresh_interval_s == 2.0
    assert s.network == NetworkSettings()
    assert s.fast_decode is False
    assert s.index == "exact"
    # The plain constructor has the same defaults as an empty environment.
    assert Settings(home=s.home) == s


def test_service_types_are_the_settings_types() -> None:
    assert LimitsFromService is ServiceLimits
    assert BatchingFromService is BatchingConfig


# (variable, value, how to read it from Settings, expected)
CASES: list[tuple[str, str, str, Any]] = [
    ("ZSINDEX_HOME", "/srv/zs", "home", Path("/srv/zs")),
    ("ZSINDEX_DATABASE_URL", "postgresql://db/zs", "database_url", "postgresql://db/zs"),
    ("ZSINDEX_MODEL", "zsindex-tiny", "model", "zsindex-tiny"),
    ("ZSINDEX_PRETRAINED", "/w.safetensors", "pretrained", "/w.safetensors"),
    ("ZSINDEX_DEVICE", "cuda:1", "device", "cuda:1"),
    ("ZSINDEX_API_KEYS", " a, b ,,c ", "api_keys", ("a", "b", "c")),
    ("ZSINDEX_PLUGINS", "shapes, colors", "plugins", ("shapes", "colors")),
    ("ZSINDEX_REQUIRE_AUTH_FOR_READS", "1", "require_auth_for_reads", True),
    ("ZSINDEX_MAX_BODY_BYTES", "1000", "limits.max_body_bytes", 1000),
    ("ZSINDEX_MAX_IMAGES_PER_REQUEST", "8", "limits.max_images_per_request", 8),
    ("ZSINDEX_MAX_EMBEDDINGS_PER_REQUEST", "9", "limits.max_embeddings_per_request", 9),
    ("ZSINDEX_MAX_IMAGE_PIXELS", "10000", "limits.max_image_pixels", 10000),
    ("ZSINDEX_MAX_CONCURRENCY", "3", "limits.max_concurrency", 3),
    ("ZSINDEX_REQUEST_TIMEOUT_S", "2.5", "limits.request_timeout_s", 2.5),
    ("ZSINDEX_BATCHING", "0", "batching.enabled", False),
    ("ZSINDEX_BATCH_MAX_IMAGES", "16", "batching.max_batch_images", 16),
    ("ZSINDEX_BATCH_MAX_WAIT_MS", "10", "batching.max_wait_s", pytest.approx(0.01)),
    ("ZSINDEX_MODEL_WORKERS", "2", "batching.model_workers", 2),
    ("ZSINDEX_TORCH_THREADS", "1", "batching.torch_threads", 1),
    ("ZSINDEX_TORCH_THREADS", "0", "batching.torch_threads", None),
    ("ZSINDEX_REFRESH_INTERVAL_S", "0", "refresh_interval_s", 0.0),
    ("ZSINDEX_REFRESH_INTERVAL_S", "0.5", "refresh_interval_s", 0.5),
    ("ZSINDEX_OFFLINE", "1", "network.offline", True),
    ("HF_HUB_OFFLINE", "1", "network.offline", True),
    ("TRANSFORMERS_OFFLINE", "true", "network.offline", True),
    ("HF_ENDPOINT", "https://hf.example", "network.hf_endpoint", "https://hf.example"),
    ("ZSINDEX_FAST_DECODE", "1", "fast_decode", True),
    ("ZSINDEX_FAST_DECODE", "yes", "fast_decode", True),
    ("ZSINDEX_FAST_DECODE", "0", "fast_decode", False),
    ("ZSINDEX_INDEX", "ivf1024", "index", "ivf:nlist=1024"),
    ("ZSINDEX_INDEX", " EXACT ", "index", "exact"),
    ("ZSINDEX_INDEX", "flat", "index", "exact"),
]


def _get(settings: Settings, dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(("var", "value", "attr", "expected"), CASES)
def test_each_variable_is_read(var: str, value: str, attr: str, expected: Any) -> None:
    assert _get(Settings.from_env({var: value}), attr) == expected


BLANK_IS_DEFAULT = sorted(
    {var for var, *_ in CASES if var.startswith("ZSINDEX_")} - {"ZSINDEX_PLUGINS"}
)


@pytest.mark.parametrize("var", BLANK_IS_DEFAULT)
def test_empty_means_default(var: str, tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path)}
    assert Settings.from_env({**env, var: ""}) == Settings.from_env(env)


def test_empty_plugin_list_allows_none() -> None:
    assert Settings.from_env({"ZSINDEX_PLUGINS": ""}).plugins == ()
    assert Settings.from_env({}).plugins is None


def test_pretrained_default_belongs_to_the_default_model() -> None:
    assert Settings.from_env({"ZSINDEX_MODEL": "zsindex-tiny"}).pretrained is None
    assert Settings.from_env({"ZSINDEX_MODEL": DEFAULT_MODEL}).pretrained == DEFAULT_PRETRAINED


@pytest.mark.parametrize(
    ("var", "value", "hint"),
    [
        ("ZSINDEX_DEVICE", "gpu", "use auto, cpu, cuda or cuda:N"),
        ("ZSINDEX_DEVICE", "cuda:x", "use auto, cpu, cuda or cuda:N"),
        ("ZSINDEX_REQUIRE_AUTH_FOR_READS", "maybe", "is not a boolean: use 0 or 1"),
        ("ZSINDEX_MAX_BODY_BYTES", "lots", "is not an integer: use a whole number of at least 1"),
        ("ZSINDEX_MAX_IMAGES_PER_REQUEST", "lots", "is not an integer"),
        ("ZSINDEX_MAX_EMBEDDINGS_PER_REQUEST", "1.5", "is not an integer"),
        ("ZSINDEX_MAX_IMAGE_PIXELS", "0", "must be at least 1, or unset it for the default"),
        ("ZSINDEX_MAX_CONCURRENCY", "-1", "must be at least 1"),
        ("ZSINDEX_REQUEST_TIMEOUT_S", "soon", "is not a number: use a number of at least 0.001"),
        ("ZSINDEX_REQUEST_TIMEOUT_S", "0", "must be at least 0.001, or unset it for the default"),
        ("ZSINDEX_REQUEST_TIMEOUT_S", "nan", "must be at least 0.001"),
        ("ZSINDEX_BATCHING", "2", "is not a boolean: use 0 or 1"),
        ("ZSINDEX_BATCH_MAX_IMAGES", "0", "must be at least 1"),
        ("ZSINDEX_BATCH_MAX_WAIT_MS", "-1", "must be at least 0, or unset it for the default (4)"),
        ("ZSINDEX_MODEL_WORKERS", "none", "is not an integer"),
        ("ZSINDEX_TORCH_THREADS", "-2", "must be at least 0, or unset it for the default (torch"),
        ("ZSINDEX_REFRESH_INTERVAL_S", "-1", "must be at least 0, or unset it for the default (2)"),
        ("ZSINDEX_OFFLINE", "sometimes", "is not a boolean: use 0 or 1"),
        ("ZSINDEX_FAST_DECODE", "fast", "is not a boolean: use 0 or 1"),
        ("ZSINDEX_INDEX", "bogus", "use e.g. exact, ivf1024 or hnsw32, or unset it"),
        ("ZSINDEX_INDEX", "exact,sq8", "exact search takes no quantizer"),
        ("ZSINDEX_INDEX", "ivf:m=3", "'m' does not apply to ivf"),
    ],
)
def test_bad_values_name_the_variable_and_the_way_out(var: str, value: str, hint: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        Settings.from_env({var: value})
    message = str(err.value)
    assert message.startswith(f"{var}={value!r}"), message
    assert hint in message
    assert "\n" not in message


def test_hugging_face_offline_variables_are_read_their_own_way() -> None:
    # HF_HUB_OFFLINE is huggingface_hub's: anything but 1/true/yes/on means online, no error.
    assert network_from_env({"HF_HUB_OFFLINE": "whatever"}).offline is False
    assert network_from_env({"HF_HUB_OFFLINE": "ON"}).offline is True
    assert network_from_env({"ZSINDEX_OFFLINE": "0", "HF_HUB_OFFLINE": "1"}).offline is True


def test_proxies_lower_case_first_and_all_proxy_as_fallback() -> None:
    net = network_from_env(
        {
            "https_proxy": "http://lower:1",
            "HTTPS_PROXY": "http://upper:2",
            "HTTP_PROXY": "http://plain:3",
            "ALL_PROXY": "socks5://all:4",
        }
    )
    assert net.proxy_for("https") == "http://lower:1"
    assert net.proxy_for("http") == "http://plain:3"
    assert net.proxy_for("ftp") == "socks5://all:4"
    assert network_from_env({"https_proxy": "", "HTTPS_PROXY": "http://u:2"}).https_proxy == (
        "http://u:2"
    )
    assert NetworkSettings().proxy_for("https") == ""


def test_default_index_keeps_config_light() -> None:
    """``exact`` (and no variable) never imports the index layer or numpy."""
    code = (
        "import sys\n"
        "from zsindex.config import Settings\n"
        "assert Settings.from_env({}).index == 'exact'\n"
        "assert Settings.from_env({'ZSINDEX_INDEX': 'exact'}).index == 'exact'\n"
        "heavy = [m for m in ('numpy', 'zsindex.index', 'zsindex.service') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_config_imports_nothing_above_it() -> None:
    """``config`` is the bottom layer: it imports only ``errors`` and ``settings_types`` at
    module level (the index grammar only inside the parse of ``ZSINDEX_INDEX``)."""
    tree = ast.parse(CONFIG.read_text(encoding="utf-8"))
    top = {
        node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zsindex")
    }
    assert top == {"zsindex.errors", "zsindex.settings_types"}
    types_tree = ast.parse((PACKAGE / "settings_types.py").read_text(encoding="utf-8"))
    assert not [
        node
        for node in ast.walk(types_tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zsindex")
    ]


# -- the environment is read in config.py only ---------------------------------------------------

# enclosing function -> the modules it may live in: why it may touch os.environ. Neither reads
# a setting.
ALLOWED_ENV_USE = {
    # Sets OMP_WAIT_POLICY for OpenMP before torch loads: a write for a C library.
    "prefer_passive_openmp": {"service/server.py"},
    # Hands the whole environment to the text worker child process (PYTHONPATH prepended).
    "_child_env": {"encoders/text_worker.py", "encoders/worker_parent.py"},
}
_ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def _env_uses(path: Path) -> list[tuple[int, str]]:
    """(line, enclosing function) of every use of ``os.environ``/``os.getenv`` in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    os_aliases = {"os"}
    found_names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_aliases |= {a.asname or a.name for a in node.names if a.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found_names |= {a.asname or a.name for a in node.names if a.name in _ENV_NAMES}
    uses: list[tuple[int, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        hit = (
            isinstance(node, ast.Attribute)
            and node.attr in _ENV_NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id in os_aliases
        ) or (isinstance(node, ast.Name) and node.id in found_names)
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            hit = hit or any(a.name in _ENV_NAMES for a in node.names)
        if hit:
            uses.append((getattr(node, "lineno", 0), function))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return uses


def test_only_config_reads_the_environment() -> None:
    offenders = []
    allowed_seen = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "config.py":
            continue
        for line, function in _env_uses(path):
            if rel in ALLOWED_ENV_USE.get(function, ()):
                allowed_seen.add(function)
            else:
                offenders.append(f"zsindex/{rel}:{line} (in {function})")
    assert not offenders, (
        "read settings in zsindex/config.py (Settings.from_env) and pass them down: "
        + ", ".join(offenders)
    )
    assert allowed_seen == set(ALLOWED_ENV_USE), "an allowed exception is gone: drop it"


def test_the_scanner_finds_environment_reads(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nimport os as o\nfrom os import getenv as g\n"
        "def f():\n    return os.environ.get('X'), o.getenv('Y'), g('Z')\n"
    )
    assert [fn for _, fn in _env_uses(sample)] == ["<module>", "f", "f", "f"]


# -- the README's table lists every variable ---------------------------------------------------


def test_readme_lists_every_zsindex_variable() -> None:
    names = set(re.findall(r'"(ZSINDEX_[A-Z_]+)"', CONFIG.read_text(encoding="utf-8")))
    assert {"ZSINDEX_FAST_DECODE", "ZSINDEX_INDEX", "ZSINDEX_BATCH_MAX_WAIT_MS"} <= names
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Environment") :]
    table = table[: table.index("\n## ", 1)]
    missing = sorted(name for name in names if f"`{name}`" not in table)
    assert not missing, f"README.md's environment table lacks {missing}"


def test_serve_help_names_the_service_variables() -> None:
    from click.testing import CliRunner

    from zsindex.cli.main import cli

    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    service = [
        "ZSINDEX_API_KEYS",
        "ZSINDEX_MAX_BODY_BYTES",
        "ZSINDEX_MAX_IMAGES_PER_REQUEST",
        "ZSINDEX_MAX_EMBEDDINGS_PER_REQUEST",
        "ZSINDEX_MAX_IMAGE_PIXELS",
        "ZSINDEX_MAX_CONCURRENCY",
        "ZSINDEX_REQUEST_TIMEOUT_S",
        "ZSINDEX_BATCHING",
        "ZSINDEX_BATCH_MAX_IMAGES",
        "ZSINDEX_BATCH_MAX_WAIT_MS",
        "ZSINDEX_MODEL_WORKERS",
        "ZSINDEX_TORCH_THREADS",
        "ZSINDEX_REFRESH_INTERVAL_S",
    ]
    assert [name for name in service if name not in result.output] == []
