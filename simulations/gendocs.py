"""Files derived from the setting declarations: pyproject.toml's run config and the docs' tables.

``python -m simulations.gendocs --write`` rewrites them; without ``--write`` it
checks them (exit status 1 when one is stale), as the tests do. Edit the
declarations, never the generated blocks:

* the general keys: the fields of :class:`simulations.config.RunConfig`;
* each method's keys (``<method>.<setting>``): its ``Settings`` dataclass, and
  its row in the methods table: its class attributes (``paper``, ``shares``, ...).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from fedetf.methods.base import setting_key, settings_fields
from fedetf.settings import allowed
from simulations.config import config_key, general_fields
from strategies.registry import METHODS, resolve_method

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "python -m simulations.gendocs --write"
PYPROJECT_MARKERS = ("# >>> run config (generated", "# <<< run config")
RUN_CONFIG_MARKERS = ("<!-- run-config table (generated", "<!-- end of run-config table -->")
METHODS_MARKERS = ("<!-- methods table (generated", "<!-- end of methods table -->")


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _shown(value: object) -> str:
    """A default as written in ``--run-config`` (strings in single quotes), for a Markdown code span."""
    return repr(value) if isinstance(value, str) else _toml(value)


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell: no column breaks, and no HTML tags outside code spans."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def pyproject_block() -> str:
    """``[tool.flwr.app.config]`` with every general key, then one table per built-in method with settings."""
    lines = [
        f"{PYPROJECT_MARKERS[0]} by `{COMMAND}` from the declarations; docs/run-config.md explains every key)",
        "[tool.flwr.app.config]",
        *(f"{config_key(f)} = {_toml(f.default)}" for f in general_fields()),
    ]
    for name in METHODS:
        cls = resolve_method(name)
        if fields := settings_fields(cls):
            lines.append(f"[tool.flwr.app.config.{cls.name}]")
            lines += [f"{f.name.replace('_', '-')} = {_toml(f.default)}" for f in fields]
    lines.append(PYPROJECT_MARKERS[1])
    return "\n".join(lines)


def run_config_block() -> str:
    """Markdown: one row per general key."""
    out = [
        f"{RUN_CONFIG_MARKERS[0]} by `{COMMAND}` from simulations/config.py) -->",
        "| key | default | allowed | meaning |",
        "|---|---|---|---|",
    ]
    for f in general_fields():
        out.append(f"| `{config_key(f)}` | `{_shown(f.default)}` | {_cell(allowed(f))} | {_cell(f.metadata['help'])} |")
    out.append(RUN_CONFIG_MARKERS[1])
    return "\n".join(out)


def methods_block() -> str:
    """Markdown: one row per method, then one row per method setting."""
    out = [
        f"{METHODS_MARKERS[0]} by `{COMMAND}` from the method declarations) -->",
        "| method | shares | keeps on the client | local objective | personal model | paper |",
        "|---|---|---|---|---|---|",
    ]
    for name in METHODS:
        c = resolve_method(name)
        personal = "own" if c.personal_model else "global model"
        cells = (c.shares, c.keeps, c.objective, personal, c.paper)
        out.append(f"| `{name}` | " + " | ".join(_cell(x) for x in cells) + " |")
    out += ["", "| setting | default | allowed | meaning |", "|---|---|---|---|"]
    for name in METHODS:
        cls = resolve_method(name)
        for f in settings_fields(cls):
            out.append(
                f"| `{setting_key(cls.name, f)}` | `{_shown(f.default)}` | {_cell(allowed(f))} "
                f"| {_cell(f.metadata['help'])} |"
            )
    out.append(METHODS_MARKERS[1])
    return "\n".join(out)


def _replace(text: str, markers: tuple[str, str], block: str, path: Path) -> str:
    pattern = re.compile(re.escape(markers[0]) + r".*?" + re.escape(markers[1]), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path}: markers {markers} not found")
    return pattern.sub(lambda _: block, text, count=1)


def rendered() -> dict[Path, str]:
    """Every generated file as it should be."""
    blocks = {
        ROOT / "pyproject.toml": (PYPROJECT_MARKERS, pyproject_block()),
        ROOT / "docs" / "run-config.md": (RUN_CONFIG_MARKERS, run_config_block()),
        ROOT / "docs" / "methods.md": (METHODS_MARKERS, methods_block()),
    }
    return {p: _replace(p.read_text(), markers, block, p) for p, (markers, block) in blocks.items()}


def stale() -> list[Path]:
    """The generated files that differ from their declarations."""
    return [p for p, text in rendered().items() if p.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the files (default: check them)")
    args = parser.parse_args(argv)
    old = stale()
    if args.write:
        for p, text in rendered().items():
            p.write_text(text)
        print(f"updated {[str(p.relative_to(ROOT)) for p in old]}" if old else "up to date")
        return 0
    if old:
        print(f"out of date: {[str(p.relative_to(ROOT)) for p in old]}; run {COMMAND}")
        return 1
    print("up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
