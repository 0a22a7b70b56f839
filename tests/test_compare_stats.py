"""fedetf-report's statistics and comparison table on synthetic run folders, with hand-computed numbers."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from simulations.experiments import figures, report, stats, tables

ROUNDS = np.arange(1, 9)  # 8 rounds; the last 5 are rounds 4..8, whose mean round is 6
SEEDS = (0, 1, 2)
# fedgela's offset over fedavg's base curve 0.50 + 0.01 * round, per seed
GELA_OFFSET = {0: 0.03, 1: 0.00, 2: 0.02}


def _write_run(
    root: Path,
    name: str,
    config: dict[str, Any],
    metrics: dict[str, np.ndarray],
    *,
    seed: int | None = None,
    method_settings: dict[str, Any] | None = None,
    status: str = "finished",
) -> Path:
    d = root / name
    d.mkdir()
    pd.DataFrame({"round": ROUNDS, **metrics}).to_csv(d / "metrics.csv", index=False)
    info: dict[str, Any] = {"status": status, "config": config}
    if seed is not None:
        info["seed"] = seed
    if method_settings is not None:
        info["method_settings"] = method_settings
    (d / "run.json").write_text(json.dumps(info))
    return d


def _new_run(root: Path, method: str, seed: int, local_epochs: int = 1, shift: float = 0.0) -> Path:
    """A new-format run: ``method`` key, dotted settings in config, ``method_settings`` and ``seed``."""
    generic = 0.50 + 0.01 * ROUNDS + 0.01 * seed + shift
    personal = 0.60 + 0.01 * ROUNDS + 0.02 * seed + shift
    if method == "fedgela":
        generic = 0.50 + 0.01 * ROUNDS + GELA_OFFSET[seed] + shift
        personal = personal + 0.05
        if seed == 0:
            generic[2] = 0.90  # a spike at round 3: the best round, outside the last 5
    metrics = {
        "generic_acc": generic,
        "generic_bacc": generic - 0.1,
        "personal_acc": personal,
        "personal_bacc": personal - 0.1,
        "personal_acc_before": personal - 0.2,
        "personal_bacc_before": personal - 0.3,
        "personal_acc_client_mean": personal - 0.01,
    }
    config = {"method": method, "seed": seed, "local-epochs": local_epochs, "fedgela.temperature": 0.1}
    settings = {"fedgela.temperature": 0.2} if method == "fedgela" else {}
    if method == "fedgela":
        config["fedgela.temperature"] = 0.2
    return _write_run(root, f"{method}-le{local_epochs}-s{seed}", config, metrics, seed=seed, method_settings=settings)


@pytest.fixture
def run_dirs(tmp_path: Path) -> list[Path]:
    return [_new_run(tmp_path, m, s) for m in ("fedavg", "fedgela") for s in SEEDS]


def test_last_best_and_last5_mean_and_std_over_seeds(run_dirs: list[Path]) -> None:
    runs = stats.load_runs(run_dirs)
    views = stats.views_for("acc", runs)
    assert views == ("generic_acc", "personal_acc", "personal_acc_before", "personal_acc_client_mean")
    table = stats.summary_table(runs, ["method"], views)
    assert table["runs"].tolist() == [3, 3]
    avg, gela = table.loc["fedavg"], table.loc["fedgela"]
    # fedavg generic per seed: last5 = 0.56, 0.57, 0.58; last = 0.58, 0.59, 0.60
    assert avg["generic_acc_last5"] == pytest.approx(0.57, abs=1e-12)
    assert avg["generic_acc_last5_std"] == pytest.approx(0.01 * np.sqrt(2 / 3), abs=1e-12)
    assert avg["generic_acc_last"] == pytest.approx(0.59, abs=1e-12)
    assert avg["generic_acc_best"] == pytest.approx(0.59, abs=1e-12)
    # fedgela generic per seed: last5 = 0.59, 0.56, 0.58; best = 0.90 (spike), 0.58, 0.60
    assert gela["generic_acc_last5"] == pytest.approx(np.mean([0.59, 0.56, 0.58]), abs=1e-12)
    assert gela["generic_acc_last5_std"] == pytest.approx(np.std([0.59, 0.56, 0.58]), abs=1e-12)
    assert gela["generic_acc_best"] == pytest.approx(np.mean([0.90, 0.58, 0.60]), abs=1e-12)
    assert gela["generic_acc_best_std"] == pytest.approx(np.std([0.90, 0.58, 0.60]), abs=1e-12)
    # personal: 0.60 + 0.06 + 0.02 * seed (+0.05 for fedgela); the extra views are shifted copies
    assert avg["personal_acc_last5"] == pytest.approx(0.68, abs=1e-12)
    assert gela["personal_acc_before_last5"] == pytest.approx(0.68 + 0.05 - 0.2, abs=1e-12)
    assert gela["personal_acc_client_mean_last5_std"] == pytest.approx(0.02 * np.sqrt(2 / 3), abs=1e-12)


def test_last_k_is_configurable(run_dirs: list[Path]) -> None:
    runs = stats.load_runs(run_dirs, last_k=2)  # rounds 7, 8
    table = stats.summary_table(runs, ["method"], ["generic_acc"], last_k=2)
    assert table.loc["fedavg", "generic_acc_last2"] == pytest.approx(0.585, abs=1e-12)


def test_paired_differences_against_fedavg(run_dirs: list[Path]) -> None:
    runs = stats.load_runs(run_dirs)
    diffs = stats.paired_differences(runs, ["method"], "generic_acc")
    assert list(diffs.index) == ["fedgela"]
    hand = [0.59 - 0.56, 0.56 - 0.57, 0.58 - 0.58]  # per seed: fedgela last5 - fedavg last5
    row = diffs.loc["fedgela"]
    assert row["diff"] == pytest.approx(np.mean(hand), abs=1e-12)
    assert row["diff_std"] == pytest.approx(np.std(hand), abs=1e-12)
    assert row["wins"] == 1 and row["paired"] == 3  # a tie is no win
    personal = stats.paired_differences(runs, ["method"], "personal_acc").loc["fedgela"]
    assert personal["diff"] == pytest.approx(0.05, abs=1e-12) and personal["diff_std"] == pytest.approx(0, abs=1e-12)
    assert personal["wins"] == 3
    table = stats.summary_table(runs, ["method"], ["generic_acc"], baseline="fedavg")
    assert table.loc["fedgela", "generic_acc_diff"] == pytest.approx(np.mean(hand), abs=1e-12)
    assert np.isnan(table.loc["fedavg", "generic_acc_diff"])
    shown = tables.comparison(table, ["generic_acc"], "fedavg", 5).set_index("method")
    assert shown.loc["fedgela", "generic_acc: seeds won"] == "1/3"
    assert shown.loc["fedavg", "generic_acc − fedavg, paired by seed [%]"] == "baseline"


def test_pairs_only_matching_seeds_and_other_keys(tmp_path: Path) -> None:
    dirs = [_new_run(tmp_path, "fedavg", s, local_epochs=le, shift=0.1 * (le - 1)) for s in SEEDS for le in (1, 2)]
    dirs += [_new_run(tmp_path, "fedgela", s, local_epochs=2) for s in SEEDS[:2]]  # seeds 0 and 1 only
    runs = stats.load_runs(dirs)
    diffs = stats.paired_differences(runs, ["method", "local-epochs"], "generic_acc")
    row = diffs.loc[("fedgela", 2)]
    hand = [0.59 - (0.56 + 0.1), 0.56 - (0.57 + 0.1)]  # against fedavg with local-epochs 2
    assert row["paired"] == 2 and row["wins"] == 0
    assert row["diff"] == pytest.approx(np.mean(hand), abs=1e-12)
    assert row["diff_std"] == pytest.approx(np.std(hand), abs=1e-12)


def test_unused_method_settings_show_a_dash(run_dirs: list[Path]) -> None:
    runs = stats.load_runs(run_dirs)
    by = ["method", "fedgela.temperature"]
    table = stats.summary_table(runs, by, ["generic_acc"], baseline="fedavg")
    assert list(table.index) == [("fedavg", "-"), ("fedgela", 0.2)]  # fedavg's default 0.1 is not shown
    # the setting fedavg does not use does not prevent pairing
    assert table.loc[("fedgela", 0.2), "generic_acc_paired"] == 3
    text = tables.markdown(tables.comparison(table, ["generic_acc"], "fedavg", 5))
    assert "| fedavg | - |" in text and "| fedgela | 0.2 |" in text
    assert stats.curve_label(("fedavg", "-"), by) == "fedavg"
    assert stats.curve_label(("fedgela", 0.2), by) == "fedgela fedgela.temperature=0.2"


def test_old_run_json_with_strategy_key(tmp_path: Path) -> None:
    dirs = []
    for s in SEEDS:
        base = 0.50 + 0.01 * ROUNDS + 0.01 * s
        for method, shift in (("fedavg", 0.0), ("fedgela", 0.02)):
            metrics = {c: base + shift for c in ("generic_acc", "generic_bacc", "personal_acc", "personal_bacc")}
            config = {"strategy": method, "seed": s, "fedgela.temperature": 0.5}  # no method_settings, no seed key
            dirs.append(_write_run(tmp_path, f"old-{method}-{s}", config, metrics))
    dirs.append(_new_run(tmp_path, "fedgela", 0, local_epochs=3))
    runs = stats.load_runs(dirs)
    assert stats.views_for("acc", runs) == ("generic_acc", "personal_acc")  # new-only views dropped
    table = stats.summary_table(runs, ["method", "fedgela.temperature"], ["generic_acc"], baseline="fedavg")
    assert list(table.index) == [("fedavg", "-"), ("fedgela", "-"), ("fedgela", 0.2)]
    assert table.loc[("fedgela", "-"), "generic_acc_diff"] == pytest.approx(0.02, abs=1e-12)
    assert table.loc[("fedgela", "-"), "generic_acc_wins"] == 3
    assert stats.summary_table(runs, ["strategy"], ["generic_acc"]).loc["fedavg", "runs"] == 3


def test_unfinished_run_is_rejected(tmp_path: Path) -> None:
    d = _write_run(tmp_path, "r", {"method": "fedavg"}, {"generic_acc": ROUNDS * 0.1}, status="running")
    with pytest.raises(ValueError, match="did not finish"):
        stats.load_runs([d])


@pytest.mark.parametrize("band", ["std", "minmax"])
def test_plot_has_integer_round_ticks(run_dirs: list[Path], tmp_path: Path, band: str) -> None:
    runs = stats.load_runs(run_dirs)
    png = tmp_path / "curves.png"
    fig = figures.plot_curves(runs, ["method"], ["generic_acc", "personal_acc"], png, band=band)
    assert png.stat().st_size > 1000
    for ax, view in zip(fig.axes, ["generic_acc", "personal_acc"], strict=True):
        assert ax.get_xlabel() == "round" and ax.get_title() == view
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert [line.get_label() for line in ax.get_lines()] == ["fedavg", "fedgela"]
        assert len(ax.collections) == 2  # one shaded band per group
    mean = fig.axes[0].get_lines()[0].get_ydata()
    assert mean[-1] == pytest.approx(0.59, abs=1e-12)  # fedavg, round 8, mean over seeds


def test_report_prints_the_comparison_and_the_best_round_apart(
    run_dirs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    report.main([*map(str, run_dirs), "--out", str(out)])
    printed = capsys.readouterr().out
    comparison, best = printed.split("## Best round")
    head = (
        "| method | generic_acc, mean of last 5 rounds [%] | generic_acc − fedavg, paired by seed [%] "
        "| generic_acc: seeds won | personal_acc, mean of last 5 rounds [%] "
        "| personal_acc − fedavg, paired by seed [%] | personal_acc: seeds won | seeds |"
    )
    assert head in comparison and "mean ± std over 3 seeds" in printed
    # fedgela generic last5 per seed 0.59, 0.56, 0.58 (mean 57.67, std 1.25); differences +0.03, -0.01, 0.00
    # (mean +0.67, std 1.70); personal: fedavg 0.66, 0.68, 0.70 (68.0 ± 1.6), fedgela +5.0 on every seed
    assert "| fedavg | 57.0 ± 0.8 | baseline |  | 68.0 ± 1.6 | baseline |  | 3 |" in comparison
    assert "| fedgela | 57.7 ± 1.2 | +0.7 ± 1.7 | 1/3 | 73.0 ± 1.6 | +5.0 ± 0.0 | 3/3 | 3 |" in comparison
    assert "best" not in comparison.split("|", 1)[1]  # no best-round number in the comparison
    # best round, apart: fedgela generic 0.90 (the spike), 0.58, 0.60 -> 69.3 ± 14.6; personal round 8: 75.0 ± 1.6
    assert "| method | generic_acc, best round [%] | personal_acc, best round [%] | seeds |" in best
    assert "| fedgela | 69.3 ± 14.6 | 75.0 ± 1.6 | 3 |" in best
    md = (out / "table.md").read_text()
    assert md.index("## Comparison: mean of the last 5 rounds") < md.index("## Best round") < md.index("## Other views")
    table = pd.read_csv(out / "table.csv", index_col="method")
    assert table.loc["fedgela", "generic_acc_wins"] == 1
    assert table.loc["fedavg", "personal_acc_last5"] == pytest.approx(0.68, abs=1e-12)
    page = (out / "index.html").read_text()
    assert page.count("<table") == 3 and "+0.7 ± 1.7" in page
    assert (out / "curves_acc.png").stat().st_size > 1000


def test_report_without_baseline_says_so(run_dirs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report.main([*map(str, run_dirs[3:]), "--out", str(tmp_path / "r"), "--metric", "bacc", "--last-k", "3"])
    out = capsys.readouterr().out
    assert "no paired differences: no 'fedavg' run among the runs" in out
    assert "seeds won" not in out and "generic_bacc, mean of last 3 rounds [%]" in out
    assert "| fedgela | " in out
