"""The sweep's plan: run-config keys and values checked against the app, and every run to do.

``--set KEY=VALUE`` and ``--grid KEY=V1,V2`` values are typed as TOML, like Flower's ``--run-config``;
keys are checked against the app's ``[tool.flwr.app.config]``. :func:`build_plan` crosses methods,
grid values and seeds into :class:`PlannedRun` entries, each with its folder name and run config.
"""

from __future__ import annotations

import difflib
import itertools
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Value = bool | int | float | str
#: Keys the sweep sets itself (``--methods``, ``--seeds``, the run folder; ``resume`` to continue a cut run).
RESERVED = {
    "method": "--methods",
    "seed": "--seeds",
    "output-dir": "the sweep (SWEEP_DIR/runs/<name>)",
    "resume": "the sweep (it resumes cut runs itself)",
}


class SweepError(ValueError):
    """A bad argument or an inconsistent sweep folder; the message is one line."""


# ----------------------------------------------------------------------------- values and keys


def parse_value(text: str) -> Value:
    """A run-config value typed as TOML, like Flower's ``--run-config`` (``0.1``, ``true``, ``'x'``).

    Text that is not a TOML value (``mnist``, ``/data``) is taken as a string, so quotes are optional.
    """
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if not isinstance(value, bool | int | float | str):
        raise SweepError(f"value {text!r}: allowed: a bool, int, float or string (no lists or tables)")
    return value


def parse_list(text: str) -> list[tuple[str, Value]]:
    """The comma-separated values of ``--grid KEY=V1,V2`` as ``(text, value)`` pairs (quote a value holding a comma)."""
    try:
        values = tomllib.loads(f"v = [{text}]")["v"]
        parts = [str(v) if isinstance(v, str) else t.strip() for v, t in zip(values, _split_top(text), strict=True)]
    except (tomllib.TOMLDecodeError, ValueError):
        parts = [p.strip() for p in text.split(",")]
        values = [parse_value(p) for p in parts]
    if not parts or any(p == "" for p in parts):
        raise SweepError(f"--grid values {text!r}: allowed: one or more comma-separated values, e.g. 0.2,1e-5")
    seen: list[Value] = []
    for v in values:
        if not isinstance(v, bool | int | float | str):
            raise SweepError(f"--grid value {v!r}: allowed: a bool, int, float or string")
        if any(type(v) is type(u) and v == u for u in seen):
            raise SweepError(f"--grid values {text!r}: {v!r} is given twice")
        seen.append(v)
    return list(zip(parts, values, strict=True))


def _split_top(text: str) -> list[str]:
    """Split on commas outside quotes."""
    parts, cur, quote = [], "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ",":
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [*parts, cur]


def split_assignment(text: str, option: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value text); a one-line error otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise SweepError(f"{option} {text!r}: allowed: KEY=VALUE, e.g. {option} local-epochs=1")
    return key.strip(), value.strip()


def toml_value(value: Value) -> str:
    """``value`` as Flower's ``--run-config`` parses it back (TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value and "\\" not in value:
        return f'"{value}"'
    raise SweepError(f"string {value!r} holds both quote kinds (or a quote and a backslash): Flower cannot pass it")


def run_config_string(overrides: dict[str, Value]) -> str:
    """The ``--run-config`` argument of ``flwr run``."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in overrides.items())


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables as dotted keys, as Flower flattens a run config."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def app_defaults(app: Path) -> dict[str, Value]:
    """The app's run config defaults: ``[tool.flwr.app.config]`` of ``app/pyproject.toml``, flattened."""
    try:
        project = tomllib.loads((app / "pyproject.toml").read_text())
        config = project["tool"]["flwr"]["app"]["config"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        raise SweepError(f"--app {app}: no Flower app (pyproject.toml with [tool.flwr.app.config]): {e}") from None
    return flatten(config)


def resolve_key(key: str, known: dict[str, Value], methods: Sequence[str], option: str) -> list[str]:
    """The run-config key(s) ``key`` names.

    A key of the app's config names itself. A bare method setting (``temperature``) names
    ``<method>.temperature`` for each method in ``methods`` that has it.
    """
    if key in RESERVED:
        raise SweepError(f"{option} {key}=...: {key!r} is set by {RESERVED[key]}")
    if key in known:
        return [key]
    if "." not in key:
        found = [f"{m}.{key}" for m in methods if f"{m}.{key}" in known]
        if found:
            return found
    close = difflib.get_close_matches(key, list(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see [tool.flwr.app.config] in pyproject.toml"
    raise SweepError(f"{option} {key}=...: unknown run-config key {key!r}{hint}")


def namespace(key: str) -> str | None:
    """The method a dotted setting belongs to (``fedgela`` for ``fedgela.temperature``)."""
    return key.split(".", 1)[0] if "." in key else None


def safe(text: str) -> str:
    """A file-name-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9._+=-]+", "-", text).rstrip("-") or "x"


# ----------------------------------------------------------------------------- the plan


@dataclass
class PlannedRun:
    """One run of the sweep."""

    name: str
    method: str
    seed: int
    grid: dict[str, Value]
    overrides: dict[str, Value]
    num_supernodes: int
    rounds: int


def build_plan(
    methods: Sequence[str],
    seeds: Sequence[int],
    base: dict[str, Value],
    grid: dict[str, list[tuple[str, Value]]],
    defaults: dict[str, Value],
    num_supernodes: int | None = None,
) -> list[PlannedRun]:
    """Every (seed, method, grid values) combination, seed-major, so that paired results come first.

    Parameters
    ----------
    methods, seeds
        The methods and seeds.
    base
        Run-config overrides shared by all runs (preset, then ``--set``).
    grid
        Full key -> ``(text, value)`` pairs. A dotted key ``m.x`` varies only the runs of method ``m``.
    defaults
        The app's run-config defaults (for ``num-clients`` and ``num-server-rounds``).
    num_supernodes
        Supernodes per run (at most its ``num-clients``; fewer serve the clients in turn); ``None`` uses each
        run's ``num-clients``.
    """
    plan: list[PlannedRun] = []
    for seed in seeds:
        for method in methods:
            keys = [k for k in grid if namespace(k) in (None, method)]
            for combo in itertools.product(*(grid[k] for k in keys)):
                values = {k: v for k, (_, v) in zip(keys, combo, strict=True)}
                parts = [safe(method.replace(":", "-"))]
                for k, (text, v) in zip(keys, combo, strict=True):
                    short = k.removeprefix(f"{method}.")
                    parts.append(f"{safe(short)}={safe(v if isinstance(v, str) else text)}")
                parts.append(f"seed{seed}")
                overrides = {**base, **values, "method": method, "seed": seed}
                merged = {**defaults, **overrides}
                clients = int(merged.get("num-clients", 10))
                plan.append(
                    PlannedRun(
                        name="_".join(parts),
                        method=method,
                        seed=seed,
                        grid=values,
                        overrides=overrides,
                        num_supernodes=min(num_supernodes or clients, clients),
                        rounds=int(merged.get("num-server-rounds", 1)),
                    )
                )
    seen: dict[str, PlannedRun] = {}
    for run in plan:
        if run.name in seen:
            raise SweepError(
                f"runs {seen[run.name].grid} and {run.grid} get the same folder name {run.name!r}; give distinct values"
            )
        seen[run.name] = run
    return plan
