"""The text-encoder worker process: same numbers as in process, clear errors, no leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from enc_helpers import Bundle, write_local_dir

from zsindex.encoders import load_encoder
from zsindex.encoders.text import encode_labels
from zsindex.encoders.text_worker import TextWorker, start_text_worker
from zsindex.errors import ModelError

PROMPTS = [
    "a photo of a dog.",
    "a photo of a cat.",
    "a photo of Corvus corax.",
    "a photo of Corvus corone.",
    "an origami Panthera leo.",
]


def _worker(name: str = "zsindex-tiny") -> TextWorker:
    return TextWorker(load_encoder(name, device="cpu"))


def test_worker_features_equal_the_in_process_encoder() -> None:
    encoder = load_encoder("zsindex-tiny", device="cpu")
    tokens, truncated = encoder.tokenize_prompts(PROMPTS)
    expected = encoder.encode_tokens(tokens)
    seen: list[tuple[int, int]] = []
    with _worker() as worker:
        w_tokens, w_truncated = worker.tokenize_prompts(PROMPTS)
        assert np.array_equal(w_tokens, tokens) and np.array_equal(w_truncated, truncated)
        got = worker.encode_tokens(tokens, batch_size=2, progress=lambda d, t: seen.append((d, t)))
        again = worker.encode_tokens(tokens[:2], batch_size=8, progress=None)  # reusable
        assert worker.runtime == "plain"  # the standard text tower, built without open_clip
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(again, expected[:2], atol=1e-6)
    assert seen and seen[-1] == (len(PROMPTS), len(PROMPTS))


def test_label_embeddings_through_the_worker_equal_in_process() -> None:
    labels = ["dog", "cat", "Corvus corax", "dog"]
    templates = ["a photo of a {}.", "a drawing of a {}."]
    encoder = load_encoder("zsindex-tiny", device="cpu")
    expected = encode_labels(encoder, labels, templates)
    with _worker() as worker:
        got = encode_labels(worker, labels, templates)
    np.testing.assert_allclose(got.embeddings, expected.embeddings, atol=1e-6)
    assert got.num_prompts == expected.num_prompts == 6


def test_a_tower_outside_the_standard_kind_runs_through_open_clip(
    tmp_path: Path, custom_causal: Bundle
) -> None:
    folder = write_local_dir(tmp_path / "custom", custom_causal)
    encoder = load_encoder(f"local-dir:{folder}", device="cpu")
    tokens, _ = encoder.tokenize_prompts(PROMPTS)
    with TextWorker(encoder) as worker:
        got = worker.encode_tokens(tokens, batch_size=8)
        assert worker.runtime == "open_clip"
    np.testing.assert_allclose(got, encoder.encode_tokens(tokens), atol=1e-6)


def test_a_model_the_worker_cannot_load_is_a_model_error(tmp_path: Path, tiny_clip: Bundle) -> None:
    from safetensors.numpy import load_file, save_file

    folder = write_local_dir(tmp_path / "broken", tiny_clip)
    weights = folder / "open_clip_model.safetensors"
    state = load_file(str(weights))
    state["token_embedding.weight"] = state["token_embedding.weight"][:, :7].copy()
    save_file(state, str(weights))
    with _worker(f"local-dir:{folder}") as worker:
        tokens, _ = worker.tokenize_prompts(PROMPTS)
        with pytest.raises(ModelError, match="token_embedding"):
            worker.encode_tokens(tokens, batch_size=8)


def test_a_failed_encode_is_an_error_frame_and_the_worker_lives_on() -> None:
    with _worker() as worker:
        tokens, _ = worker.tokenize_prompts(PROMPTS[:2])
        bad = tokens.copy()
        bad[0, 1] = 10**6  # no such token: the embedding lookup fails inside torch
        with pytest.raises(ModelError, match="text encoding failed: IndexError"):
            worker.encode_tokens(bad, batch_size=8)
        assert worker.encode_tokens(tokens, batch_size=8).shape[0] == 2


def _many_prompts(n: int) -> list[str]:
    return [f"a photo of Genus{i // 7} species{i}." for i in range(n)]


def test_prompts_in_parts_equal_the_in_process_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts go out while the next ones tokenize; features and progress cover the whole."""
    from zsindex.encoders import worker_parent

    monkeypatch.setattr(worker_parent, "PART_PROMPTS", 64)
    prompts = _many_prompts(300)
    encoder = load_encoder("zsindex-tiny", device="cpu")
    checked: list[int] = []
    seen: list[tuple[int, int]] = []
    with _worker() as worker:
        tokens, truncated, got = worker.tokenize_and_encode(
            prompts,
            batch_size=32,
            progress=lambda d, t: seen.append((d, t)),
            check=lambda tok, tr: checked.append(len(tok)),
        )
        again = worker.encode_tokens(tokens[:3], batch_size=8, progress=None)  # still usable
    expected_tokens, expected_truncated = encoder.tokenize_prompts(prompts)
    assert np.array_equal(tokens, expected_tokens)
    assert np.array_equal(truncated, expected_truncated) and checked == [300]
    np.testing.assert_allclose(got, encoder.encode_tokens(expected_tokens), atol=1e-6)
    np.testing.assert_allclose(again, got[:3], atol=1e-6)
    assert seen[-1] == (300, 300) and all(t == 300 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 5


def test_a_check_that_fails_stops_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from zsindex.encoders import worker_parent
    from zsindex.errors import InvalidInputError

    monkeypatch.setattr(worker_parent, "PART_PROMPTS", 64)

    def refuse(tokens: np.ndarray, truncated: np.ndarray) -> None:
        raise InvalidInputError("too long")

    worker = _worker()
    with pytest.raises(InvalidInputError, match="too long"):
        worker.tokenize_and_encode(_many_prompts(200), batch_size=32, progress=None, check=refuse)
    assert worker._proc is None  # killed and reaped, not left encoding parts nobody wants


def test_a_failed_part_is_one_error_and_the_rest_of_its_parts_are_dropped() -> None:
    with _worker() as worker:
        tokens, _ = worker.tokenize_prompts(PROMPTS)
        bad = tokens.copy()
        bad[2, 1] = 10**6
        parts = [(0, tokens[:2], False), (2, bad[2:4], False), (4, tokens[4:], True)]
        for offset, part, last in parts:
            header = {"op": "encode", "shape": list(part.shape), "batch_size": 8}
            ids = np.ascontiguousarray(part, dtype=np.int32)
            worker._request({**header, "offset": offset, "total": 5, "last": last}, ids)
        worker._wait_ready()
        with pytest.raises(ModelError, match="IndexError"):
            worker._read_result(5, None)
        # The third part was dropped unanswered: the next request gets its own answer.
        assert worker.encode_tokens(tokens[:1], batch_size=8).shape == (1, 128)


def test_a_worker_killed_while_encoding_is_a_model_error_and_close_reaps_it() -> None:
    worker = _worker()
    tokens, _ = worker.tokenize_prompts(PROMPTS[:1])
    worker.encode_tokens(tokens, batch_size=8)  # loaded and answering
    proc = worker._proc
    assert proc is not None
    proc.kill()
    with pytest.raises(ModelError, match="killed by signal 9"):
        worker.encode_tokens(tokens, batch_size=8)
    assert worker._proc is None  # closed: it died mid-answer
    worker.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        worker.encode_tokens(tokens, batch_size=8)


def test_a_worker_that_dies_before_loading_falls_back_to_this_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    encoder = load_encoder("zsindex-tiny", device="cpu")
    tokens, _ = encoder.tokenize_prompts(PROMPTS)
    expected = encoder.encode_tokens(tokens)
    worker = TextWorker(encoder)
    proc = worker._proc
    assert proc is not None
    proc.kill()  # as if Python could not start or import in the child
    with caplog.at_level("WARNING"):
        got = worker.encode_tokens(tokens, batch_size=8)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert "loading the model in this process" in caplog.text
    assert worker._proc is None


def test_the_worker_never_imports_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "numpy.py").write_text("raise SystemExit(3)\n")  # a hostile dataset folder
    monkeypatch.chdir(tmp_path)
    with _worker() as worker:
        tokens, _ = worker.tokenize_prompts(PROMPTS[:2])
        assert worker.encode_tokens(tokens, batch_size=8).shape[0] == 2


def test_close_stops_a_worker_that_is_still_loading() -> None:
    worker = _worker()
    proc = worker._proc
    assert proc is not None and proc.poll() is None
    worker.close()
    assert proc.poll() is not None


def test_no_worker_where_it_would_not_pay_off() -> None:
    import open_clip  # noqa: F401  (this process has it, as a service would)

    assert start_text_worker(load_encoder("zsindex-tiny", device="cpu")) is None


ONE_CPU = len(os.sched_getaffinity(0)) < 2


@pytest.mark.skipif(ONE_CPU, reason="the worker is used with two CPUs or more")
def test_a_registration_that_fails_leaves_no_worker_behind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("dog\n\x07bell\n")
    script = f"""
import os
from pathlib import Path
import zsindex.encoders.text_worker as tw
from zsindex.config import Settings
from zsindex.errors import InvalidInputError
from zsindex.local import LocalBackend
from zsindex.options import LabelSource
made = []
real = tw.start_text_worker
tw.start_text_worker = lambda encoder: made.append(real(encoder)) or made[-1]
settings = Settings(home=Path({str(tmp_path / "home")!r}), device="cpu")
backend = LocalBackend(settings, text_worker=True)
bad = Path({str(bad)!r})
source = LabelSource(content=bad.read_text(), format="text", content_name=str(bad))
try:
    backend.add_labelset("x", source, model="zsindex-tiny")
except InvalidInputError as exc:
    print("ERROR", exc.message)
worker = made[0]
assert worker is not None and worker._proc is None
print("STORE", backend.labelsets())
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" in proc.stdout and "line 2" in proc.stdout
    assert "STORE []" in proc.stdout


@pytest.mark.skipif(ONE_CPU, reason="the worker is used with two CPUs or more")
def test_one_shot_cli_registration_encodes_in_a_worker(tmp_path: Path) -> None:
    """A fresh ``zsindex labels add`` never imports torch itself, and stores what the
    in-process path stores."""
    labels = tmp_path / "labels.txt"
    labels.write_text("dog\ncat\nCorvus corax\nPanthera leo\n")
    env = {**os.environ, "ZSINDEX_HOME": str(tmp_path / "home"), "ZSINDEX_DEVICE": "cpu"}
    script = (
        "import sys\n"
        "from zsindex.cli import main as m\n"
        "import zsindex.cli.main as cm\n"
        "def report(state, code):\n"
        "    print('TORCH_IMPORTED', 'torch' in sys.modules, file=sys.stderr)\n"
        "    real(state, code)\n"
        "real = cm._exit_process\n"
        "cm._exit_process = report\n"
        "cm.main()\n"
    )
    args = ["labels", "add", "pets", "--file", str(labels), "--model", "zsindex-tiny"]
    proc = subprocess.run(
        [sys.executable, "-c", script, "--debug", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "text encoder worker ready (plain)" in proc.stderr
    assert "TORCH_IMPORTED False" in proc.stderr
    assert json.loads(proc.stdout)["num_labels"] == 4

    from zsindex.client import Client

    with Client.local(home=tmp_path / "home", device="cpu") as client:
        names, stored = client.embeddings("pets")
    assert names == ["dog", "cat", "Corvus corax", "Panthera leo"]
    from zsindex.labels.templates import template_set

    encoder = load_encoder("zsindex-tiny", device="cpu")
    expected = encode_labels(
        encoder, ["dog", "cat", "Corvus corax", "Panthera leo"], template_set("simple-7")
    )
    np.testing.assert_allclose(stored, expected.embeddings, atol=1e-6)


def test_the_worker_runs_the_parents_zsindex_whatever_pythonpath_says(tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "zsindex"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit(7)\n")  # another zsindex on the path
    import zsindex

    repo_root = Path(zsindex.__file__).resolve().parent.parent
    script = (
        "from zsindex.encoders import load_encoder\n"
        "from zsindex.encoders.text_worker import TextWorker\n"
        "w = TextWorker(load_encoder('zsindex-tiny', device='cpu'))\n"
        "t, _ = w.tokenize_prompts(['a photo of a dog.'])\n"
        "print(w.encode_tokens(t, batch_size=8).shape, w._fallback)\n"
        "w.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=repo_root,  # the parent imports this zsindex (the current directory comes first)
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(1,", "128)", "False"]
