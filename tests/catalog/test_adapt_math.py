"""The math of few-shot vectors and calibration, checked against independent computations:
ECE by hand, the temperature fit against a brute-force grid, leave-one-out against a loop that
builds every held-out vector explicitly."""

from __future__ import annotations

import numpy as np
import pytest

from zsindex.catalog.calibration import (
    brier,
    calibration_report,
    ece,
    fit_temperature,
    mean_nll_at,
    nll,
    reliability_bins,
    selective_curve,
    softmax_rows,
    suggest_threshold,
)
from zsindex.catalog.tuning import (
    ALPHA_GRID,
    DEFAULT_ALPHA,
    blend,
    check_alpha,
    example_means,
    loo_alpha,
)
from zsindex.errors import InvalidInputError


def test_ece_against_a_hand_computed_case() -> None:
    # 15 bins of width 1/15. Confidences 0.95, 0.95 (bin 15), 0.62 (bin 10), 0.30 (bin 5),
    # correct: yes, no, yes, no.
    # bin 15: |0.5 - 0.95| = 0.45, weight 2/4; bin 10: |1 - 0.62| = 0.38, weight 1/4;
    # bin 5: |0 - 0.30| = 0.30, weight 1/4. ECE = 0.225 + 0.095 + 0.075 = 0.395.
    conf = np.array([0.95, 0.95, 0.62, 0.30])
    hit = np.array([True, False, True, False])
    assert ece(conf, hit) == pytest.approx(0.395, abs=1e-12)
    bins = reliability_bins(conf, hit)
    assert [b.count for b in bins if b.count] == [1, 1, 2]
    assert sum(b.count for b in bins) == 4


def test_ece_bin_edges_belong_to_the_lower_bin() -> None:
    # 1/15 exactly sits in bin 1 ((0, 1/15]); 0 goes to bin 1 too.
    bins = reliability_bins(np.array([1 / 15, 0.0, 1.0]), np.array([True, True, True]))
    assert bins[0].count == 2 and bins[-1].count == 1


def test_perfectly_calibrated_bins_give_zero_ece() -> None:
    conf = np.array([0.8] * 5 + [0.4] * 5)
    hit = np.array([1, 1, 1, 1, 0, 1, 1, 0, 0, 0], dtype=bool)
    assert ece(conf, hit) == pytest.approx(0.0, abs=1e-12)


def test_nll_and_brier_by_hand() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]])
    truth = np.array([0, 2])
    assert nll(probs, truth) == pytest.approx(-(np.log(0.7) + np.log(0.25)) / 2)
    # (0.09 + 0.04 + 0.01) and (0.25 + 0.0625 + 0.5625)
    assert brier(probs, truth) == pytest.approx((0.14 + 0.875) / 2 / 2)  # halved: [0, 1]


def _logits_case(seed: int, n: int = 300, classes: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n)
    cos = rng.normal(0.2, 0.05, (n, classes))
    cos[np.arange(n), truth] += rng.normal(0.04, 0.05, n)  # often right, sometimes not
    return np.clip(cos, -1, 1), truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_temperature_fit_matches_a_brute_force_grid(seed: int) -> None:
    cos, truth = _logits_case(seed)
    scale = 100.0
    fitted = fit_temperature(cos, truth, scale)
    grid = np.exp(np.linspace(np.log(0.01), np.log(100), 20001))
    losses = [mean_nll_at(cos, truth, scale / t) for t in grid]
    best = float(grid[int(np.argmin(losses))])
    assert fitted == pytest.approx(best, rel=2e-3)
    assert mean_nll_at(cos, truth, scale / fitted) <= min(losses) + 1e-9


def test_temperature_never_changes_the_ranking() -> None:
    cos, truth = _logits_case(3)
    t = fit_temperature(cos, truth, 100.0)
    assert t != pytest.approx(1.0)
    before = softmax_rows(cos * 100.0)
    after = softmax_rows(cos * 100.0 / t)
    np.testing.assert_array_equal(np.argsort(-before, axis=1), np.argsort(-after, axis=1))


def test_calibration_lowers_nll_and_ece_on_an_overconfident_model() -> None:
    cos, truth = _logits_case(4)
    report = calibration_report(cos, truth, 100.0, target_precision=0.8)
    assert report["nll_after"] < report["nll_before"]
    assert report["ece_after"] < report["ece_before"]
    assert set(report["suggested_reject_below"]) == {"0.8", "0.9", "0.95", "0.99"}


def test_a_separable_set_cannot_fit_a_temperature() -> None:
    truth = np.arange(20) % 4
    cos = np.full((20, 4), 0.1)
    cos[np.arange(20), truth] = 0.3  # every image right by a wide margin
    with pytest.raises(InvalidInputError, match="every image is classified correctly"):
        calibration_report(cos, truth, 100.0)


def test_suggested_threshold_reaches_the_precision_with_most_coverage() -> None:
    conf = np.array([0.99, 0.9, 0.8, 0.7, 0.6, 0.5])
    hit = np.array([True, True, True, False, True, False])
    # kept at P=0.8: 3/3 right; P=0.6: 4/5 = 0.8; P=0.5: 4/6.
    assert suggest_threshold(conf, hit, 1.0) == pytest.approx(0.8)
    assert suggest_threshold(conf, hit, 0.8) == pytest.approx(0.6)
    assert suggest_threshold(conf, np.zeros(6, dtype=bool), 0.5) is None
    curve = {c["reject_below"]: c for c in selective_curve(conf, hit)}
    assert curve[0.0]["coverage"] == 1.0 and curve[0.8]["coverage"] == pytest.approx(0.5)
    assert curve[0.8]["accuracy"] == 1.0


def test_threshold_never_splits_tied_confidences() -> None:
    conf = np.array([0.9, 0.9, 0.5])
    hit = np.array([True, False, True])
    # A threshold at 0.9 keeps both tied images (precision 0.5), never just the right one.
    assert suggest_threshold(conf, hit, 1.0) is None


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_blend_is_the_renormalised_mix_and_keeps_labels_without_examples() -> None:
    rng = np.random.default_rng(0)
    text = _unit(rng.normal(size=(4, 16))).astype(np.float32)
    emb = _unit(rng.normal(size=(5, 16))).astype(np.float32)
    rows = np.array([0, 0, 2, 2, 2])
    means, counts = example_means(emb, rows, 4)
    out = blend(text, means, counts, 0.3)
    m0 = _unit(emb[:2].astype(np.float64).sum(axis=0))
    np.testing.assert_allclose(out[0], _unit(0.7 * text[0] + 0.3 * m0), atol=1e-6)
    np.testing.assert_array_equal(out[1], text[1])
    np.testing.assert_array_equal(out[3], text[3])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(blend(text, means, counts, 0.0), text, atol=1e-6)


def test_leave_one_out_matches_an_explicit_loop() -> None:
    rng = np.random.default_rng(5)
    dim, labels = 12, 5
    text = _unit(rng.normal(size=(labels, dim)))
    centres = _unit(text + rng.normal(0, 0.8, size=(labels, dim)))
    rows = np.array([0, 0, 1, 1, 1, 2, 3, 3, 4, 4])  # label 2 has a single example
    emb = _unit(centres[rows] + rng.normal(0, 0.5, size=(len(rows), dim)))
    candidates = np.arange(labels)
    scale = 50.0
    choice = loo_alpha(text, emb, rows, candidates, scale)
    for a in ALPHA_GRID:
        hits, losses = [], []
        for i in range(len(rows)):
            if (rows == rows[i]).sum() < 2:
                continue  # label 2's only example is not a query
            keep = np.arange(len(rows)) != i
            means, counts = example_means(emb[keep], rows[keep], labels)
            vectors = blend(text, means, counts, a).astype(np.float64)
            scores = vectors @ emb[i]
            z = scores * scale
            losses.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[rows[i]])
            hits.append(int(np.argmax(scores)) == rows[i])
        assert choice.accuracy[a] == pytest.approx(np.mean(hits)), a
        assert choice.nll[a] == pytest.approx(np.mean(losses), rel=1e-4, abs=1e-5), a
    best = min(ALPHA_GRID, key=lambda a: (-choice.accuracy[a], choice.nll[a], a))
    assert choice.alpha == best


def test_leave_one_out_with_one_example_per_label_takes_the_default() -> None:
    rng = np.random.default_rng(6)
    text = _unit(rng.normal(size=(3, 8)))
    emb = _unit(rng.normal(size=(3, 8)))
    choice = loo_alpha(text, emb, np.arange(3), np.arange(3), 50.0)
    assert choice.alpha == DEFAULT_ALPHA and choice.accuracy == {}


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "x", True])
def test_alpha_outside_the_range_is_refused(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="alpha"):
        check_alpha(bad)  # type: ignore[arg-type]


def test_alpha_auto_and_numbers_are_taken() -> None:
    assert check_alpha("AUTO") == "auto"
    assert check_alpha("0.25") == 0.25 and check_alpha(1) == 1.0
