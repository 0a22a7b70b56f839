"""The run config is declared once, the generated files follow it, and the README and docs hold together."""

from __future__ import annotations

import inspect
import re
import tomllib
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from data_prep.datasets import DATASETS, DatasetInfo, register_dataset
from data_prep.federated import load_federation
from fedetf.settings import check_setting
from simulations import config, gendocs
from simulations.config import RunConfig, config_key, general_fields, parse_run_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _table_keys(markdown: str) -> list[str]:
    """The first column of the generated run-config table, in order."""
    block = markdown[markdown.index(gendocs.RUN_CONFIG_MARKERS[0]) : markdown.index(gendocs.RUN_CONFIG_MARKERS[1])]
    return re.findall(r"^\| `([^`]+)` \|", block, flags=re.M)


def test_every_runconfig_field_has_exactly_one_declaration() -> None:
    declared = general_fields()
    assert [f.name for f in fields(RunConfig)] == [f.name for f in declared] + ["method_options"]
    for f in declared:
        assert f.metadata["help"] and f.default is not MISSING, f.name
        assert check_setting(f, f.default) == f.default, f"{f.name}: its default breaks its own declaration"
    keys = [config_key(f) for f in declared]
    assert len(set(keys)) == len(keys)
    assert not set(keys) & set(config.builtin_method_defaults())
    assert not hasattr(config, "CHECKS")  # no second table of per-key checks

    with (ROOT / "pyproject.toml").open("rb") as fh:
        table = tomllib.load(fh)["tool"]["flwr"]["app"]["config"]
    general = {k: v for k, v in table.items() if not isinstance(v, dict)}
    assert list(general) == keys
    assert general == {config_key(f): f.default for f in declared}
    assert _table_keys((ROOT / "docs" / "run-config.md").read_text()) == keys
    assert list(RunConfig().to_dict())[: len(keys)] == keys


def test_pyproject_and_docs_are_up_to_date_with_the_declarations() -> None:
    stale = [str(p.relative_to(ROOT)) for p in gendocs.stale()]
    assert not stale, f"{stale} out of date: run python -m simulations.gendocs --write"


def test_a_stale_generated_block_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("run-config.md", "methods.md"):
        (docs / name).write_text((ROOT / "docs" / name).read_text())
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text().replace("lr = 0.01", "lr = 0.5"))
    monkeypatch.setattr(gendocs, "ROOT", tmp_path)
    assert gendocs.stale() == [tmp_path / "pyproject.toml"]
    assert gendocs.main([]) == 1 and gendocs.main(["--write"]) == 0 and gendocs.stale() == []


def test_load_federation_has_no_default_other_than_the_run_config() -> None:
    params = inspect.signature(load_federation).parameters
    pairs = {
        "classes_per_client": "classes_per_client",
        "dirichlet_beta": "dirichlet_beta",
        "pcdd_assignment": "pcdd_assignment",
        "normalize": "normalize",
        "generic_test": "generic_test",
    }
    run_defaults = RunConfig()
    for param, attr in pairs.items():
        default = params[param].default
        assert default is inspect.Parameter.empty or default == getattr(run_defaults, attr), param


def test_a_registered_dataset_is_allowed_at_once() -> None:
    info = DatasetInfo("docs-test-set", 4, 1, 28, "cnn", (0.5,), (0.5,))
    with pytest.raises(config.ConfigError, match="dataset='docs-test-set'; allowed: one of"):
        parse_run_config({"dataset": info.name})
    register_dataset(info, lambda seed, options: None)
    try:
        assert parse_run_config({"dataset": info.name, "classes-per-client": 2}).num_classes == 4
    finally:
        del DATASETS[info.name]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", [ROOT / "README.md", *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = page.read_text()
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target} does not exist"
        assert ROOT in dest.parents or dest == ROOT, f"{page.name}: {target} leaves the repository"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest.read_text()), f"{page.name}: no heading for #{anchor} in {dest.name}"


def test_readme_is_short_links_every_docs_page_and_cites_nothing_outside() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(readme) if t.startswith("docs/")}
    assert {p.resolve() for p in DOCS} <= linked
    for page in [ROOT / "README.md", *DOCS]:
        assert "shared/spec" not in page.read_text(), page.name


def test_readme_commands_are_the_ones_ci_and_a_new_user_run() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    install, tests = blocks[0], blocks[1]
    assert 'pip install -e ".[dev]"' in install
    assert "export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" in install
    assert 'flwr run . --stream --federation-config "num-supernodes=10 ' in install
    assert RunConfig().num_clients == 10
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests.strip() in [line.strip() for line in ci if not line.startswith("#")]


def test_methods_page_shows_the_tested_user_method() -> None:
    source = (ROOT / "tests" / "userpkg" / "feddecorr.py").read_text()
    assert f"```python\n{source}```" in (ROOT / "docs" / "methods.md").read_text()
