"""The report's trust section (cgaps.report.checks): robustness.json and validation.json as tables."""

from __future__ import annotations

import json

from cgaps.report.checks import checks_section, robustness_html, validation_html

VALIDATION = {
    "null": {"draws": 20, "draws_with_calls": 3, "share_with_calls": 0.15, "promise": "at most 1 draw in 20"},
    "planted": [
        {"support": "20-49", "effect": 0.5, "planted": 9, "recall": 0.89},
        {"support": "20-49", "effect": 0.2, "planted": 9, "recall": 0.11},
    ],
    "families": {
        "all_tested_concepts": 0.2,
        "weak": {
            "concepts": 7,
            "accuracy": 0.05,
            "shuffled_mean": 0.2,
            "shuffled_95": [0.15, 0.25],
            "p_shuffled": 0.01,
        },
        "strong": {"concepts": 0, "accuracy": None},
    },
}


def _swap(label: str) -> dict:
    side = {"concept": 5, "label": label, "chi_model": 0.9, "support": 30}
    dist = {
        "chi_model": {"ks": 0.12, "quantiles_a": {"q50": 0.4}, "quantiles_b": {"q50": 0.45}},
        "chi_bench": {"ks": 0.3},
        "missing_share_a": 0.1,
        "missing_share_b": 0.25,
    }
    return {
        "sae_a": "embedded:x",
        "sae_b": "/saes/other",
        "width_a": 8192,
        "width_b": 4096,
        "distributions": {"ALL": dist},
        "missing_share_order": {"rho": 0.87},
        "matching": {
            "cosine_quantiles": {"q50": 0.61},
            "close_share": 0.3,
            "close_cosine": 0.7,
            "spearman_chi_model": {"rho": 0.55, "pairs": 900},
            "spearman_chi_model_close": {"rho": 0.8, "pairs": 300},
            "spearman_random_pairing": {"rho": 0.01, "pairs": 900},
        },
        "saliency_matching": {
            "correlation_quantiles": {"q50": 0.52},
            "close_share": 0.12,
            "close_correlation": 0.7,
            "spearman_chi_model": {"rho": 0.66, "pairs": 1200},
        },
        "extremes": {"top": [{"a": side, "b": side}], "bottom": []},
    }


def test_validation_section_states_the_figures():
    html = str(validation_html(VALIDATION))
    assert "3 called any gap or strength (OUTSIDE the promise" in html
    assert "<td>20-49</td><td>0.11 (9)</td><td>0.89 (9)</td>" in html  # effects sorted 0.2, 0.5
    assert "<td>gaps (7 concepts)</td><td>0.050</td><td>0.200</td><td>0.150–0.250</td><td>0.010</td>" in html
    assert "Planted topics" not in html  # no topics in this file: no table


def test_validation_section_shows_the_planted_topics_with_their_spread():
    topics = {
        "facet": "meta.<b>level</b>",
        "sizes": [
            {
                "per_group": 30,
                "groups": 7,
                "planted_groups": 2,
                "accuracy_planted": 0.1,
                "accuracy_other": 0.7,
                "n_draws": 20,
                "weak_concepts": 18.25,
                "weak_themes": 1.5,
                "calls_median": 0.0,
                "draws_with_calls": 5,
                "draws_with_5_calls": 3,
                "top_pointing": 1.0,
                "draws": [],
            },
            # a validation.json written before the spread was recorded
            {
                "per_group": 100,
                "groups": 7,
                "weak_concepts": 200.0,
                "weak_themes": 30.0,
                "top_pointing": 0.975,
                "draws": [{}] * 5,
            },
        ],
    }
    html = str(validation_html({**VALIDATION, "topics": topics}))
    assert (
        "<td>30</td><td>7</td><td>20</td><td>18.2 + 1.5</td><td>0.0</td><td>3 of 20</td><td>1.00</td>" in html
    )
    assert "<td>100</td><td>7</td><td>5</td><td>200.0 + 30.0</td><td>–</td><td>–</td><td>0.97</td>" in html
    assert "meta.&lt;b&gt;level&lt;/b&gt;" in html and "<b>level" not in html


def test_robustness_section_with_swap_escapes_labels():
    rob = {
        "subsampling": {
            "repeats": 100,
            "drop": 0.2,
            "mean_std_chi_model": 0.0307,
            "mean_std_chi_bench": 0.0023,
        },
        "ablation": {
            "median_before": 0.379,
            "best": {"concepts": 100, "deleted_items": 10, "median_after": 0.350, "change_rel": -0.0766},
            "worst": {"concepts": 100, "deleted_items": 10, "median_after": 0.383, "change_rel": 0.0099},
        },
        "sae_swap": _swap("<script>alert(1)</script>"),
    }
    html = str(robustness_html(rob))
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "0.379 → 0.350 (-7.7%)" in html and "<td>0.0307</td><td>0.014</td>" in html
    assert "Spearman of matched χ_model: 0.550 over 900 pairs, 0.800 over the 300 close pairs" in html
    assert (
        "median correlation 0.520, 12.0% with r ≥ 0.7; Spearman of matched χ_model 0.660 over 1200 pairs"
        in html
    )
    assert "<td>10.0% / 25.0%</td>" in html and "Spearman between the two SAEs: 0.870" in html


def test_section_reads_validation_json_and_is_empty_without_files(tmp_path):
    assert str(checks_section(tmp_path, None)) == ""
    (tmp_path / "validation.json").write_text(json.dumps(VALIDATION))
    html = str(checks_section(tmp_path, None))
    assert "Are the calls calibrated?" in html and "Are the figures stable?" not in html
