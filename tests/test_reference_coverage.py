"""Every registered method has a reference test that cites its authors' code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from strategies.registry import METHODS

REFERENCE = Path(__file__).resolve().parent / "reference"
#: ``owner/repository`` of a public code host, e.g. ``MediaBrain-SJTU/FedGELA``.
CITATION = re.compile(r"\b[\w.-]+/[\w.-]+@?[0-9a-f]{0,40}\b.*\.(py|sh|ipynb)\b", re.S)


def test_every_method_has_a_reference_test_citing_its_source() -> None:
    missing, uncited = [], []
    for name in METHODS:
        path = REFERENCE / f"test_{name}.py"
        if not path.is_file():
            missing.append(name)
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if not CITATION.search(doc):
            uncited.append(name)
    assert not missing, f"methods without tests/reference/test_<name>.py: {missing}"
    assert not uncited, f"reference tests whose docstring names no repository file: {uncited}"
