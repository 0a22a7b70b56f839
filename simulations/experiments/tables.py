"""The report's tables for people: values in %, ``mean ± std`` over seeds, as pandas DataFrames of text.

:func:`comparison` is the headline (the mean of the last k rounds, paired differences against the
baseline, seeds won); :func:`best_round` holds the best-round numbers apart. :func:`markdown` writes
either as a Markdown table; ``DataFrame.to_html`` gives the HTML.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from simulations.experiments.stats import stat_name


def pct(mean: float, std: float, signed: bool = False) -> str:
    """``mean ± std`` of two fractions, in %, with one decimal (``""`` for NaN)."""
    if pd.isna(mean) or math.isnan(float(mean)):
        return ""
    return f"{100 * mean:{'+' if signed else ''}.1f} ± {100 * std:.1f}"


def _keys(table: pd.DataFrame) -> pd.DataFrame:
    """The grouping keys of ``table``'s index as text columns."""
    return table.index.to_frame(index=False).astype(str)


def comparison(table: pd.DataFrame, views: Sequence[str], baseline: str, last_k: int) -> pd.DataFrame:
    """Per group and view: the mean of the last ``last_k`` rounds, the difference to ``baseline`` paired by
    seed (mean ± std over seeds) and the seeds won out of those paired; then the number of seeds.

    ``table`` is :func:`simulations.experiments.stats.summary_table`'s output (with the baseline's columns
    when there was one).
    """
    out = _keys(table)
    paired = f"{views[0]}_diff" in table.columns
    for v in views:
        stat = f"last{last_k}"
        out[f"{v}, {stat_name(stat)} [%]"] = [
            pct(m, s) for m, s in zip(table[f"{v}_{stat}"], table[f"{v}_{stat}_std"], strict=True)
        ]
        if paired:
            diffs, wins = [], []
            for _, row in table.iterrows():
                n = row[f"{v}_paired"]
                if pd.isna(n):
                    diffs.append("baseline")
                    wins.append("")
                else:
                    diffs.append(pct(row[f"{v}_diff"], row[f"{v}_diff_std"], signed=True) if n else "no paired seed")
                    wins.append(f"{int(row[f'{v}_wins'])}/{int(n)}")
            out[f"{v} − {baseline}, paired by seed [%]"] = diffs
            out[f"{v}: seeds won"] = wins
    out["seeds"] = table["runs"].astype(int).astype(str).to_numpy()
    return out


def best_round(table: pd.DataFrame, views: Sequence[str]) -> pd.DataFrame:
    """Per group and view: the best round's value (the highest of any round of a run), mean ± std over seeds."""
    out = _keys(table)
    for v in views:
        out[f"{v}, best round [%]"] = [
            pct(m, s) for m, s in zip(table[f"{v}_best"], table[f"{v}_best_std"], strict=True)
        ]
    out["seeds"] = table["runs"].astype(int).astype(str).to_numpy()
    return out


def markdown(frame: pd.DataFrame) -> str:
    """``frame`` (text cells) as a Markdown pipe table."""
    cells = frame.astype(str).map(lambda c: c.replace("|", "\\|"))
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


def html(frame: pd.DataFrame) -> str:
    """``frame`` (text cells) as an HTML table."""
    return frame.to_html(index=False, border=0, escape=True)
