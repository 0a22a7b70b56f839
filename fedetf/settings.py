"""Declared settings: one dataclass field per setting, with its default, a help line and what is allowed.

Both kinds of run-config keys are declared this way: each method's hyperparameters
(its ``Settings`` dataclass, :mod:`fedetf.methods`) and the general keys
(:class:`simulations.config.RunConfig`). Validation (:func:`check_setting`), the
error messages and the generated tables (:func:`allowed`), pyproject.toml's
defaults and ``run.json`` all read the declaration; nothing restates it.

The type of a setting is the type of its default (``bool``, ``int``, ``float`` or
``str``; an integer is accepted where a float is expected).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import Field, dataclass, field
from typing import Any

__all__ = ["Rule", "allowed", "check_setting", "choices_of", "setting"]


@dataclass(frozen=True)
class Rule:
    """A check that a range or a list of choices cannot express (a path, a JSON object, an import path).

    ``text`` says what is allowed, as error messages and the docs show it; ``ok`` tells a good value.
    """

    text: str
    ok: Callable[[Any], bool]


def setting(
    default: Any,
    help: str,  # noqa: A002 - the name reads best in declarations
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | Callable[[], Iterable[Any]] | None = None,
    rule: Rule | None = None,
) -> Any:
    """Declare one setting: its default, its meaning, and its allowed values.

    ``choices`` may be a callable for an open registry (e.g. the datasets), read at each check.
    """
    metadata = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "rule": rule}
    return field(default=default, metadata=metadata)


def choices_of(f: Field) -> tuple[Any, ...] | None:
    """The allowed values of a setting with choices, else ``None``."""
    c = f.metadata.get("choices")
    return tuple(c()) if callable(c) else c


def allowed(f: Field) -> str:
    """What a setting allows, in words (e.g. ``a number in (0, 1]``, ``one of 'a', 'b'``)."""
    m, kind = f.metadata, type(f.default)
    if choices := choices_of(f):
        return "one of " + ", ".join(repr(c) for c in choices)
    if m.get("rule"):
        return m["rule"].text
    if kind is bool:
        return "true or false"
    noun = "an integer" if kind is int else "a number" if kind is float else "a string"
    low = next(((m[k], b) for k, b in (("gt", "("), ("ge", "[")) if m.get(k) is not None), None)
    high = next(((m[k], b) for k, b in (("lt", ")"), ("le", "]")) if m.get(k) is not None), None)
    if low and high:
        return f"{noun} in {low[1]}{low[0]}, {high[0]}{high[1]}"
    if low:
        return f"{noun} {'>' if low[1] == '(' else '>='} {low[0]}"
    if high:
        return f"{noun} {'<' if high[1] == ')' else '<='} {high[0]}"
    return noun


def check_setting(f: Field, value: Any) -> Any:
    """Return ``value`` coerced to the setting's type, or raise ``ValueError`` (message: what is allowed)."""
    kind, m = type(f.default), f.metadata
    ok_type = (
        isinstance(value, bool)
        if kind is bool
        else (isinstance(value, int) and not isinstance(value, bool))
        if kind is int
        else (isinstance(value, int | float) and not isinstance(value, bool))
        if kind is float
        else isinstance(value, str)
    )
    if not ok_type:
        raise ValueError(allowed(f))
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(allowed(f))
    choices = choices_of(f)
    bad = (
        (choices is not None and value not in choices)
        or (m.get("gt") is not None and not value > m["gt"])
        or (m.get("ge") is not None and not value >= m["ge"])
        or (m.get("lt") is not None and not value < m["lt"])
        or (m.get("le") is not None and not value <= m["le"])
        or (m.get("rule") is not None and not m["rule"].ok(value))
    )
    if bad:
        raise ValueError(allowed(f))
    return value
