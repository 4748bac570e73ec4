"""The real-model benchmark's own helpers (the numbers they print go in the report)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from benchmarks.real_routing import RUNS, parse_args, run_folder
from benchmarks.real_routing_policies import STEP_INDICES, rewrite_rates


def _trace(authors: str) -> dict[str, object]:
    return {"steps": [{"author": "strong" if a == "s" else "weak"} for a in authors]}


def test_rewrite_rates_count_only_solutions_that_reach_the_step() -> None:
    traces = [_trace("sww"), _trace("sw"), _trace("s"), _trace("ws"), _trace("wsw")]
    rates = rewrite_rates(traces)
    assert len(rates) == STEP_INDICES
    assert rates[0] == 3 / 5
    # four solutions reach step 1: fewer than five, so no rate is claimed
    assert rates[1] is None
    more = [*traces, _trace("ws")]
    assert rewrite_rates(more)[1] == 3 / 5


def test_run_tag_names_a_folder_of_its_own() -> None:
    base = ["run", "--split", "dev", "--n", "3", "--policies", "weak"]
    assert run_folder(parse_args(base)) == RUNS / "dev_gsm8k"
    assert run_folder(parse_args([*base, "--tag", "x"])) == RUNS / "dev_gsm8k_x"
    walltime = parse_args([*base, "--dataset", "math500", "--no-cache", "--tag", "x"])
    assert run_folder(walltime) == RUNS / "dev_math500_walltime_x"
    lines = parse_args([*base, "--strong-format", "lines"])
    assert run_folder(lines) == RUNS / "dev_gsm8k_strong-lines"


def test_the_report_finds_a_variants_wall_time_run_where_run_writes_it() -> None:
    from benchmarks.real_routing_report import walltime_folder

    test = RUNS / "test_gsm8k"
    assert walltime_folder(test) == RUNS / "test_gsm8k_walltime"
    argv = ["run", "--split", "test", "--n", "300", "--policies", "thr:0.85", "--no-cache"]
    written = run_folder(parse_args([*argv, "--strong-format", "lines", "--tag", "to085"]))
    assert walltime_folder(test, "lines_to085") == written


def test_always_strong_keeps_its_own_format_in_a_variant_run() -> None:
    from benchmarks.real_routing import strong_format_for
    from langchain_trim.policies.registry import make_policy

    assert strong_format_for(make_policy("strong"), "lines") is None
    assert strong_format_for(make_policy("thr:0.85"), "lines") == "lines"
    assert strong_format_for(make_policy("thr:0.85"), "") is None
    assert strong_format_for(make_policy("strong"), "lines", cut_always_strong=True) == "lines"


def test_a_second_worker_starts_later_in_the_same_list() -> None:
    base = ["run", "--split", "test", "--n", "300", "--policies", "weak"]
    assert parse_args(base).start == 0
    assert parse_args([*base, "--start", "200"]).start == 200
    assert parse_args(base).end is None
    assert parse_args([*base, "--end", "250"]).end == 250


def test_the_readme_quotes_the_report_verbatim() -> None:
    """README.md's real-model block is the committed one the report it links wrote, to the
    letter."""
    import re

    from benchmarks.real_routing_report import README_MARKERS, README_SECTION

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    start, end = (readme.index(m) for m in README_MARKERS)
    block = readme[start : end + len(README_MARKERS[1])] + "\n"
    linked = re.findall(r"\]\((benchmarks/results/real_routing/[^)]*)report\.md\)", block)
    assert len(set(linked)) == 1, linked
    assert block == (root / linked[0] / README_SECTION).read_text(encoding="utf-8")


def test_the_readme_block_quotes_no_number_while_interim() -> None:
    from benchmarks.real_routing_report import OUT, PLANNED, readme_section

    metrics = json.loads((OUT / "metrics.json").read_text(encoding="utf-8"))
    complete = copy.deepcopy(metrics)
    for name, n in PLANNED.items():
        complete[name]["n_test"] = n
    full = readme_section(complete)
    assert "APGR TRIM-Thr − difficulty router" in full and "%" not in full.split("|")[0]
    apgr = complete["test_gsm8k"]["families"]["TRIM-Thr"]["apgr"][0]
    assert f"{apgr:.3f}" in full
    short = copy.deepcopy(complete)
    short["test_gsm8k"]["n_test"] = PLANNED["test_gsm8k"] - 1
    interim = readme_section(short)
    assert "Interim" in interim and f"{apgr:.3f}" not in interim and "|" not in interim


def test_pasting_replaces_only_the_block(tmp_path: Path) -> None:
    from benchmarks.real_routing_report import README_MARKERS, paste_into_readme

    readme = tmp_path / "README.md"
    start, end = README_MARKERS
    readme.write_text(f"# x\n\n{start}\nold\n{end}\n\n## More\n", encoding="utf-8")
    paste_into_readme(f"{start}\nnew | 1\n{end}\n", readme)
    paste_into_readme(f"{start}\nnew | 2\n{end}\n", readme)
    assert readme.read_text(encoding="utf-8") == f"# x\n\n{start}\nnew | 2\n{end}\n\n## More\n"


def test_a_query_router_pays_what_its_signal_needs_then_the_strong_run() -> None:
    from benchmarks.real_routing_report import router_seconds

    weak = {
        "seconds": 10.0,
        "steps": [{"seconds": 2.0, "draft_score": 0.5}, {"seconds": 8.0, "draft_score": 0.9}],
    }
    run = {"weakscored": {"q": weak}, "strong": {"q": {"seconds": 20.0}}}
    # difficulty reads step 0's score (0.5): escalated below 0.6 after 2 s, kept above 0.4
    assert router_seconds(run, "q", "difficulty", 0.6) == 22.0
    assert router_seconds(run, "q", "difficulty", 0.4) == 10.0
    # AutoMix reads the whole weak solution's min score first
    assert router_seconds(run, "q", "automix_min", 0.6) == 30.0
    assert router_seconds(run, "q", "automix_min", 0.4) == 10.0


def test_a_point_is_compared_with_the_curve_at_its_own_cost() -> None:
    import numpy as np

    from benchmarks.real_routing_report import above_curve

    def col(acc: float, tokens: float) -> tuple[np.ndarray, np.ndarray]:
        return np.array([acc, acc]), np.array([tokens, tokens])

    cols = {}
    for name, (a, t) in {
        "weak": (0.2, 0.0),
        "strong": (0.6, 200.0),
        "thr": (0.5, 100.0),
        "x": (0.45, 50.0),
        "y": (0.45, 150.0),
    }.items():
        cols[f"{name}:c"], cols[f"{name}:t"] = col(a, t)
    family = ["weak", "strong", "thr"]
    # the hull runs 0.2 → 0.5 over 0..100 tokens: 0.35 at 50, then 0.55 at 150
    assert abs(above_curve(cols, "x", family) - 0.10) < 1e-9
    assert abs(above_curve(cols, "y", family) + 0.10) < 1e-9


def test_a_capped_rewrite_and_its_escalated_continuation_cost_one_step() -> None:
    from benchmarks.real_routing_report import rewrite_cost

    def step(author: str, tokens: int, stop: str = "delimiter") -> dict[str, object]:
        return {"author": author, "tokens": tokens, "stop": stop}

    trace = {
        "steps": [
            step("weak", 10),
            step("strong", 48, "length"),  # capped: the next record continues the step
            step("strong", 12),  # its continuation, escalated again
            step("strong", 30),  # a step of its own
            step("strong", 48, "length"),
            step("weak", 5),  # a capped rewrite finished by the draft
        ]
    }
    cost = rewrite_cost({"thr:0.5": {"p": trace}}, "thr:0.5")
    assert cost["rewritten_steps"] == 3
    assert cost["per_step"] == (60 + 30 + 48) / 3
    assert cost["per_call"] == (48 + 12 + 30 + 48) / 4
    assert rewrite_cost({"thr:0.5": {"p": trace}}, "thr:0.5", ids=[])["per_step"] is None


def test_a_variant_run_with_another_n_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import benchmarks.real_routing as rr

    monkeypatch.setattr(rr, "RUNS", tmp_path)
    (tmp_path / "dev_gsm8k").mkdir()
    (tmp_path / "dev_gsm8k" / "config.json").write_text(
        json.dumps({"dataset": {"n_problems": 200}})
    )
    variant = tmp_path / "dev_gsm8k_strongcap48"
    args = parse_args(["run", "--split", "dev", "--n", "70", "--policies", "thr:0.5"])
    rr.warn_if_unpaired(args, variant)
    assert "--n 200 --end K" in capsys.readouterr().err
    args = parse_args(["run", "--split", "dev", "--n", "200", "--policies", "thr:0.5"])
    rr.warn_if_unpaired(args, variant)
    assert capsys.readouterr().err == ""


def test_a_rewrite_is_set_beside_always_strongs_own_step_and_the_draft_it_replaced() -> None:
    from benchmarks.real_routing_report import step_stats

    def trace(*steps: tuple[str, int, int | None]) -> dict[str, object]:
        rows = [
            {"author": a, "tokens": n, "draft_tokens": d, "index": i}
            for i, (a, n, d) in enumerate(steps)
        ]
        spent = sum(n for a, n, _ in steps if a == "strong")
        return {"steps": rows, "spend": {"strong_tokens": spent}}

    run = {
        "strong": {
            "a": trace(("strong", 40, None), ("strong", 60, None)),
            "b": trace(("strong", 50, None), ("strong", 50, None)),
        },
        "thr:0.5": {"a": trace(("weak", 10, 10), ("strong", 30, 35), ("weak", 20, 20))},
    }
    stats = step_stats(run)
    assert stats["strong"]["step_share_of_strong_solution"] == 0.5  # 50 of 100 tokens
    assert stats["thr:0.5"]["rewrite_share_of_strong_solution"] == 0.3
    assert stats["thr:0.5"]["replaced_draft_tokens_mean"] == 35
    assert stats["thr:0.5"]["step_share_of_strong_solution"] == 0.2  # (10 + 30 + 20) / 3


def test_a_strong_mode_is_adopted_only_if_cheap_per_step_and_not_below_the_curve() -> None:
    """The rule fixed before the instruct-mode dev run: a cheaper point on a lower line
    (what APGR's 0.5 floor could not tell apart) is refused."""
    from benchmarks.real_routing_report import strong_mode_on_dev

    def trace(correct: bool, rewrites: list[int]) -> dict[str, object]:
        steps = [{"author": "strong", "tokens": n, "stop": "delimiter"} for n in rewrites]
        spend = {"strong_tokens": sum(rewrites)}
        return {"correct": correct, "steps": steps, "spend": spend}

    ids = [str(i) for i in range(10)]
    dev = {  # weak 0/10 @ 0, strong 10/10 @ 100, thr 6/10 @ 50: the default line
        "weakscored": {i: trace(False, []) for i in ids},
        "strong": {i: trace(True, [50, 50]) for i in ids},
        "thr:0.5": {i: trace(int(i) < 6, [50]) for i in ids},
    }
    below = {"thr:0.5": {i: trace(int(i) < 2, [20]) for i in ids}}  # 20% @ 20: below 24%
    above = {"thr:0.5": {i: trace(int(i) < 4, [20]) for i in ids}}  # 40% @ 20: above it
    long = {"thr:0.5": {i: trace(int(i) < 7, [30]) for i in ids}}  # above, but 30% a step
    refused = strong_mode_on_dev(dev, below, "instruct")
    assert refused["share_of_strong_solution"] == 0.2 and not refused["adopted"]
    assert abs(refused["above_default_curve"]["thr:0.5"] + 0.04) < 1e-9
    assert strong_mode_on_dev(dev, above, "instruct")["adopted"]
    assert not strong_mode_on_dev(dev, long, "instruct")["adopted"]


def test_the_lines_sweep_is_judged_at_its_own_dev_point() -> None:
    """The rule fixed before the session-11 lines sweep: the point ``fit_threshold`` picks
    from the lines thresholds must be cheap per rewritten step and not below the curve."""
    from benchmarks.real_routing_report import strong_lines_point_on_dev

    def trace(pid: str, correct: bool, rewrites: list[int]) -> dict[str, object]:
        steps = [{"author": "strong", "tokens": n, "stop": "delimiter"} for n in rewrites]
        return {
            "problem_id": pid,
            "correct": correct,
            "steps": steps,
            "spend": {"strong_tokens": sum(rewrites)},
        }

    ids = [str(i) for i in range(10)]
    dev = {  # weak 0/10 @ 0, strong 10/10 @ 100, thr 6/10 @ 50: the default line
        "weakscored": {i: trace(i, False, []) for i in ids},
        "strong": {i: trace(i, True, [50, 50]) for i in ids},
        "thr:0.5": {i: trace(i, int(i) < 6, [50]) for i in ids},
    }
    cheap_steps = {  # best ΔIBC at thr:0.8: 8/10 @ 60 in 20-token rewrites, above the line
        "thr:0.4": {i: trace(i, int(i) < 1, [20]) for i in ids},
        "thr:0.8": {i: trace(i, int(i) < 8, [20, 20, 20]) for i in ids},
    }
    chosen = strong_lines_point_on_dev(dev, cheap_steps)
    assert chosen["chosen"] == "thr:0.8" and chosen["adopted"]
    assert chosen["share_of_strong_solution"] == 0.2
    assert abs(chosen["above_default_curve"] - (0.8 - 0.68)) < 1e-9  # hull: 68% @ 60
    below = {"thr:0.8": {i: trace(i, int(i) < 5, [20, 20, 20]) for i in ids}}  # 50% @ 60
    assert not strong_lines_point_on_dev(dev, below)["adopted"]
    long = {"thr:0.8": {i: trace(i, int(i) < 9, [60]) for i in ids}}  # above, 60% a step
    assert not strong_lines_point_on_dev(dev, long)["adopted"]


def _run(pid: str, correct: bool, strong: int) -> dict[str, object]:
    steps = [{"author": "strong", "tokens": strong, "stop": "delimiter"}] if strong else []
    return {
        "problem_id": pid,
        "correct": correct,
        "steps": steps,
        "spend": {"strong_tokens": strong},
    }


def test_a_transferred_expressive_policy_goes_to_test_only_above_the_lines_curve() -> None:
    """The rule fixed before the session-14 dev run: above the lines Thr curve at its cost."""
    from benchmarks.real_routing_report import expressive_transfer_on_dev, transferred_choices

    ids = [str(i) for i in range(10)]
    lines = {  # weak 0/10 @ 0, strong 10/10 @ 100, thr 6/10 @ 50
        "weakscored": {i: _run(i, False, 0) for i in ids},
        "strong": {i: _run(i, True, 100) for i in ids},
        "thr:0.5": {i: _run(i, int(i) < 6, 50) for i in ids},
    }
    transfer = {
        "agg:a": {i: _run(i, int(i) < 7, 50) for i in ids},  # +10 points at 50
        "pomdp:p": {i: _run(i, int(i) < 5, 50) for i in ids},  # -10 points at 50
    }
    out = expressive_transfer_on_dev(lines, transfer)
    assert out["n"] == 10
    assert out["points"]["agg:a"]["to_test"] and not out["points"]["pomdp:p"]["to_test"]
    assert abs(out["points"]["agg:a"]["above_lines_curve"][0] - 0.1) < 1e-9
    assert abs(out["points"]["pomdp:p"]["above_lines_curve"][0] + 0.1) < 1e-9
    assert transferred_choices(out) == {"TRIM-Agg (paragraphs-trained)": "agg:a"}
    # a policy that ran on part of the problems is judged on the shared ones only
    partial = {"agg:a": {i: transfer["agg:a"][i] for i in ids[:4]}}
    assert expressive_transfer_on_dev(lines, partial)["n"] == 4


def test_the_format_by_scorer_ablation_reports_each_contrast_paired() -> None:
    from benchmarks.real_routing_report import ablation

    ids = [str(i) for i in range(10)]
    base = {
        "weakscored": {i: _run(i, False, 0) for i in ids},
        "strong": {i: _run(i, True, 100) for i in ids},
    }
    arms = {
        "a · thr (probe)": ({"t": {i: _run(i, int(i) < 5, 50) for i in ids}}, "t"),
        "a · o (oracle scorer)": ({"o": {i: _run(i, int(i) < 6, 50) for i in ids}}, "o"),
        "missing (probe)": ({}, "x"),  # an arm with no run is left out, not an error
    }
    out = ablation(
        base,
        arms,
        [("a · o (oracle scorer)", "a · thr (probe)"), ("missing (probe)", "a · thr (probe)")],
    )
    assert set(out["points"]) == {"weak", "strong", "a · thr (probe)", "a · o (oracle scorer)"}
    ((name, diff),) = out["differences"].items()
    # ΔIBC: +0.1 accuracy for the same 50 strong tokens over a 1.0-per-100-tokens line
    assert name == "ΔIBC a · o (oracle scorer) − a · thr (probe)"
    assert diff[0] is not None and diff[0] > 0
    # an oracle arm against its format's probe sweep: thr 50% @ 50 on a 0 → 100% line
    sweep = [({"t": arms["a · thr (probe)"][0]["t"]}, "t")]
    curved = ablation(base, arms, [], {"a · o (oracle scorer)": sweep})
    above = curved["above_probe_curve"]["a · o (oracle scorer)"][0]
    assert abs(above - 0.1) < 1e-9  # 60% @ 50 against the hull's 50% @ 50
