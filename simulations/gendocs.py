"""Derived files of the method declarations: pyproject.toml's method tables and the README's method table.

``python -m simulations.methods_doc --write`` regenerates both; the tests fail
when either is out of date. A method's settings are declared once, in its
``Settings`` dataclass (:func:`fedetf.methods.setting`).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from fedetf.methods.base import allowed, setting_key, settings_fields
from strategies.registry import METHODS, resolve_method

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT_MARKERS = ("# >>> method settings (generated", "# <<< method settings")
README_MARKERS = ("<!-- methods table (generated", "<!-- end of methods table -->")


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def pyproject_block() -> str:
    """The ``[tool.flwr.app.config.<method>]`` tables of every built-in method with settings."""
    lines = [f"{PYPROJECT_MARKERS[0]} by `python -m simulations.methods_doc --write`; edit the declarations)"]
    for name in METHODS:
        cls = resolve_method(name)
        fields = settings_fields(cls)
        if not fields:
            continue
        lines.append(f"[tool.flwr.app.config.{cls.name}]")
        lines += [f"{f.name.replace('_', '-')} = {_toml(f.default)}" for f in fields]
    lines.append(PYPROJECT_MARKERS[1])
    return "\n".join(lines)


def readme_block() -> str:
    """Markdown: one row per method, then one row per setting."""
    out = [
        f"{README_MARKERS[0]} by `python -m simulations.methods_doc --write` from the method declarations) -->",
        "| method | shares | keeps on the client | local objective | personal model | paper |",
        "|---|---|---|---|---|---|",
    ]
    for name in METHODS:
        c = resolve_method(name)
        personal = "own" if c.personal_model else "global model"
        out.append(f"| `{name}` | {c.shares} | {c.keeps} | {c.objective} | {personal} | {c.paper} |")
    out += ["", "| setting | default | allowed | meaning |", "|---|---|---|---|"]
    for name in METHODS:
        cls = resolve_method(name)
        for f in settings_fields(cls):
            default = _toml(f.default).replace('"', "'")
            out.append(f"| `{setting_key(cls.name, f)}` | `{default}` | {allowed(f)} | {f.metadata['help']} |")
    out.append(README_MARKERS[1])
    return "\n".join(out)


def _replace(text: str, markers: tuple[str, str], block: str, path: Path) -> str:
    pattern = re.compile(re.escape(markers[0]) + r".*?" + re.escape(markers[1]), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path}: markers {markers} not found")
    return pattern.sub(lambda _: block, text, count=1)


def rendered() -> dict[Path, str]:
    """The two files as they should be."""
    py, readme = ROOT / "pyproject.toml", ROOT / "README.md"
    return {
        py: _replace(py.read_text(), PYPROJECT_MARKERS, pyproject_block(), py),
        readme: _replace(readme.read_text(), README_MARKERS, readme_block(), readme),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the files (default: check them)")
    args = parser.parse_args(argv)
    stale = [p for p, text in rendered().items() if p.read_text() != text]
    if args.write:
        for p, text in rendered().items():
            p.write_text(text)
        print(f"updated {[p.name for p in stale]}" if stale else "up to date")
        return 0
    if stale:
        print(f"out of date: {[p.name for p in stale]}; run python -m simulations.methods_doc --write")
        return 1
    print("up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
