"""Malformed run configs and data: one ERROR line each, no traceback, nothing trained or overwritten.

Every case runs through the ServerApp's real entry point (``server_app.main`` with a Flower ``Context`` whose run
config Flower's own parser built from the same ``--run-config`` string), in-process and fast. The case Flower itself
rejects (an unknown key) also runs through the real ``flwr run . --stream`` (in a copy of the app without .venv,
``tests/flwr_cli.app_copy``; a local SuperLink with its own FLWR_HOME and ports). Each ``flwr run`` of an app-side
case starts Ray even when the app fails at once (10-30 s), and the app prints every such one-line error through the
same code path, so they run in-process only; a real ``flwr run`` whose clients all fail ends in one line too
(test_flwr_cli).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.flwr_cli import FLWR, ROOT, app_copy, flwr_run, isolated_env, stop_local_superlink

NODES = 2
RELATIVE_OUT = "bad-configs-relative-output"

#: User modules on the path: one raises while imported, one does not parse, one is no method.
USER_MODULES = {
    "badcfg_raising.py": 'raise RuntimeError("boom while importing")\n',
    "badcfg_syntax.py": "def broken(:\n",
    "badcfg_plain.py": "class NotAMethod:\n    pass\n",
}


@dataclass(frozen=True)
class Case:
    id: str
    #: ``--run-config``; ``{existing}`` (a folder with earlier results), ``{empty}`` (an empty folder),
    #: ``{interrupted}`` (an unfinished run with a checkpoint), ``{file}`` (a file) and ``{fresh}`` (a path that
    #: does not exist yet) are filled in. Unless given, ``output-dir='{fresh}'`` and
    #: ``num-clients`` = the number of supernodes are added.
    run_config: str
    #: Substrings of the one ERROR line (placeholders filled in alike).
    expect: tuple[str, ...]
    #: Rejected by the flwr CLI itself, before the app runs.
    by_flower: bool = False
    needs_no_gpu: bool = False


CASES = [
    Case("lr-negative", "lr=-1.0", ("lr=-1.0", "allowed: a number > 0")),
    Case("lr-zero", "lr=0.0", ("lr=0.0", "allowed: a number > 0")),
    Case("dataset-unknown", "dataset='imagenet'", ("dataset='imagenet'", "allowed: one of", "'digits'")),
    Case(
        "partition-unknown",
        "partition='shards'",
        ("partition='shards'", "allowed: one of 'dirichlet', 'dirichlet-per-client', 'iid'"),
    ),
    Case("method-unknown", "method='fedfoo'", ("method='fedfoo'", "'fedgela'", "'package.module:ClassName'")),
    Case(
        "method-module-missing",
        "method='no_such_pkg.methods:Mine'",
        ("method='no_such_pkg.methods:Mine'", "cannot import 'no_such_pkg.methods'", "No module named"),
    ),
    Case(
        "method-import-raises",
        "method='badcfg_raising:Mine'",
        ("method='badcfg_raising:Mine'", "allowed: an importable", "RuntimeError: boom while importing"),
    ),
    Case(
        "method-not-a-local-method",
        "method='badcfg_plain:NotAMethod'",
        ("method='badcfg_plain:NotAMethod'", "is not a fedetf.methods.LocalMethod subclass"),
    ),
    Case("server-unknown", "server='fedfoo'", ("server='fedfoo'", "allowed: 'auto', one of", "'fedadam'")),
    Case(
        "server-import-fails",
        "server='badcfg_syntax:Server'",
        ("server='badcfg_syntax:Server'", "allowed: an importable", "SyntaxError", "badcfg_syntax.py"),
    ),
    Case("server-args-not-json", "server-args='eta=0.1'", ("server-args='eta=0.1'", "allowed: a JSON object")),
    Case(
        "server-args-unknown-for-fedadam",
        """server='fedadam' server-args='{"etaa": 0.1}'""",
        ("""server-args='{"etaa": 0.1}'""", "FedAdam does not take ['etaa']", "allowed:", "'eta'", "'tau'"),
    ),
    Case(
        "method-args-unknown",
        """method-args='{"temp": 1.0}'""",
        ("method-args=", "'temperature'", "not ['temp']"),
    ),
    Case("fedrs-alpha-range", "method='fedrs' fedrs.alpha=1.5", ("fedrs.alpha=1.5", "allowed: a number in [0, 1]")),
    Case("fedgela-temperature-zero", "fedgela.temperature=0.0", ("fedgela.temperature=0.0", "allowed: a number > 0")),
    Case("num-clients-float", "num-clients=2.5", ("num-clients=2.5", "allowed: an integer")),
    Case("drop-last-string", "drop-last='yes'", ("drop-last='yes'", "allowed: true or false")),
    Case("fraction-train-zero", "fraction-train=0.0", ("fraction-train=0.0", "allowed: a number in (0, 1]")),
    Case("classes-per-client-above-k", "classes-per-client=11", ("classes-per-client=11", "an integer in [1, 10]")),
    Case("feature-dim-below-k-1", "feature-dim=5", ("feature-dim=5", "allowed: an integer >= num_classes - 1 = 9")),
    Case(
        "output-dir-relative",
        f"output-dir='{RELATIVE_OUT}'",
        (f"output-dir='{RELATIVE_OUT}'", "allowed: an absolute path"),
    ),
    Case(
        "output-dir-not-empty",
        "output-dir='{existing}'",
        ("output-dir='{existing}' exists and is not empty", "allowed: a new or empty folder"),
    ),
    Case(
        "dataset-folder-missing",
        "dataset='cifar10' data-root='{empty}' download=false",
        ("dataset 'cifar10' not found in {empty}", "download=true", "python -m data_prep.vision cifar10"),
    ),
    Case(
        "weights-file-missing",
        "pretrained-weights='{empty}/effnet.pt'",
        ("pretrained-weights='{empty}/effnet.pt'", "allowed: an existing weights file"),
    ),
    Case(
        "simple-cnn-on-8x8",
        "model='simple-cnn'",
        ("model='simple-cnn'", "28x28 or 32x32 only", "8x8 dataset='digits'", "'cnn'"),
    ),
    Case(
        "efficientnet-on-1-channel",
        "model='efficientnet_b0'",
        ("model='efficientnet_b0'", "allowed: 'cnn' or 'resnet18'", "1-channel dataset='digits'"),
    ),
    Case(
        "cuda-without-gpu",
        "device='cuda'",
        ("device='cuda'", "no GPU", "allowed: 'auto' or 'cpu'"),
        needs_no_gpu=True,
    ),
    Case(
        "num-clients-below-num-supernodes",
        "num-clients=1",
        ("num-clients=1", f"the federation has {NODES} supernodes", "'num-supernodes=1'", f"'num-clients={NODES}'"),
    ),
    Case(
        "resume-without-output-dir", "resume=true output-dir=''", ("resume=true", "allowed: true only with output-dir")
    ),
    Case(
        "resume-without-checkpoint",
        "resume=true output-dir='{existing}'",
        ("cannot resume", "{existing}/checkpoint.pt does not exist"),
    ),
    Case("fault-rate-one", "fault-rate=1.0", ("fault-rate=1.0", "allowed: a number in [0, 1)")),
    Case(
        "resume-with-changed-config",
        "resume=true output-dir='{interrupted}' lr=0.5",
        ("cannot resume {interrupted}: its config differs in lr=0.01 (now 0.5)", "resume with the same config"),
    ),
    Case(
        "output-dir-under-proc",
        "output-dir='/proc/fedetf-results'",
        ("output-dir='/proc/fedetf-results' cannot be written", "creating a folder in /proc failed", "allowed:"),
    ),
    Case(
        "output-dir-a-file", "output-dir='{file}'", ("output-dir='{file}' is a file", "allowed: a new or empty folder")
    ),
    Case(
        "server-args-wrong-type",
        """server='fedadam' server-args='{"eta": "x"}'""",
        ("""server-args='{"eta": "x"}'""", "FedAdam argument 'eta'='x'", "allowed: a value of type float"),
    ),
    Case(
        "pcdd-assignment-unknown",
        "pcdd-assignment='random'",
        ("pcdd-assignment='random'", "allowed: one of 'flwr', 'sequential'"),
    ),
    Case("generic-test-unknown", "generic-test='half'", ("generic-test='half'", "allowed: one of 'balanced', 'full'")),
    Case(
        "pcdd-class-shared-by-too-many",
        "partition='pcdd' classes-per-client=10 num-clients=150",
        ("num-clients=150", "partition 'pcdd' leaves client", "without class", "lower num-clients"),
    ),
    Case(
        "dirichlet-too-many-clients",
        "partition='dirichlet' num-clients=2000",
        ("num-clients=2000", "partition 'dirichlet' leaves client", "no train samples", "lower num-clients"),
    ),
    Case("unknown-key", "learning-rate=0.1", ("Invalid run configuration",), by_flower=True),
]


def _fill(text: str, names: dict[str, str]) -> str:
    for name, value in names.items():
        text = text.replace("{" + name + "}", value)
    return text


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with a hash of its bytes (and its mode)."""
    return {
        str(p.relative_to(folder)): f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_mode:o}"
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass
class Setup:
    env: dict[str, str]
    tmp: Path
    existing: Path
    empty: Path
    interrupted: Path
    file: Path


#: What every in-process case adds to its run config (see ``test_bad_config_fails_in_one_line``).
COMMON = f"num-clients={NODES} num-server-rounds=1 local-epochs=1"


def _interrupted_run(folder: Path) -> None:
    """An unfinished run in ``folder`` with a round-1 checkpoint of the config every case has (lr 0.01)."""
    from flwr.app import ArrayRecord
    from flwr.common.config import parse_config_args
    from flwr.serverapp.strategy import FedAvg

    from simulations import checkpoint
    from simulations.config import parse_run_config
    from simulations.local import default_run_config

    folder.mkdir()
    raw = {**default_run_config(), **parse_config_args([f"output-dir='{folder}' {COMMON}"])}
    config = parse_run_config(raw).to_dict()
    (folder / "run.json").write_text(json.dumps({"status": "running", "config": config}))
    checkpoint.save(folder, server_round=1, arrays=ArrayRecord(), strategy=FedAvg(), client_states={}, config=config)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("bad-configs")
    modules = tmp / "usermods"
    modules.mkdir()
    for name, text in USER_MODULES.items():
        (modules / name).write_text(text)
    # Earlier results that no bad run may touch (no checkpoint: resume must refuse it).
    existing = tmp / "earlier-run"
    existing.mkdir()
    (existing / "MARKER").write_text("results of an earlier run\n")
    (existing / "metrics.csv").write_text("round,generic_acc,personal_acc\n1,0.5,0.6\n2,0.55,0.65\n")
    (existing / "run.json").write_text(json.dumps({"status": "running", "config": {}}))
    empty = tmp / "empty"
    empty.mkdir()
    interrupted = tmp / "interrupted-run"
    _interrupted_run(interrupted)
    file = tmp / "a-file"
    file.write_text("not a folder\n")
    env = isolated_env(tmp / "flwr-home")
    yield Setup(env, tmp, existing, empty, interrupted, file)
    stop_local_superlink(env)


class _NoGrid:
    """A Grid with ``nodes`` connected nodes that fails if a run ever gets as far as messaging them."""

    settle_seconds = 0.0  # all its nodes are there from the start

    def __init__(self, nodes: int) -> None:
        self.nodes = list(range(1, nodes + 1))

    def get_node_ids(self) -> list[int]:
        return self.nodes

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"a bad config got as far as Grid.{name}")


def _run_in_process(run_config: str) -> str:
    """The ServerApp's entry point on the run config Flower builds from ``run_config``; its log as text."""
    import logging

    from flwr.app import Context, RecordDict
    from flwr.common.config import parse_config_args

    from simulations import server_app
    from simulations.local import default_run_config

    overrides = parse_config_args([run_config])
    if set(overrides) - set(default_run_config()):
        return "Invalid run configuration (unknown key, as the SuperLink says)"
    context = Context(1, 0, {}, RecordDict(), {**default_run_config(), **overrides})
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda rec: lines.append(f"{rec.levelname} {rec.getMessage()}")  # type: ignore[method-assign]
    logger = logging.getLogger("flwr")
    logger.addHandler(handler)
    try:
        with pytest.raises(SystemExit):
            server_app.main(_NoGrid(NODES), context)
    finally:
        logger.removeHandler(handler)
    return "\n".join(lines)


#: The case that also goes through the real `flwr run .` (the README's path): one Flower's own parser rejects. Every
#: app-side case ends through one code path (``server_app.main`` logs one line and exits), checked here case by case
#: in-process; through a real `flwr run`, a run that fails in its clients ends in one line too (test_flwr_cli).
VIA_FLWR = {"unknown-key"}


PARAMS = [pytest.param(c, "in-process", id=f"{c.id}-in-process") for c in CASES if not c.by_flower] + [
    pytest.param(c, "flwr-run", id=f"{c.id}-flwr-run", marks=pytest.mark.slow) for c in CASES if c.id in VIA_FLWR
]


@pytest.mark.parametrize(("case", "via"), PARAMS)
def test_bad_config_fails_in_one_line(setup: Setup, case: Case, via: str) -> None:
    if via == "flwr-run" and FLWR is None:
        pytest.skip("flwr CLI not on PATH")
    if case.needs_no_gpu and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    fresh = setup.tmp / f"fresh-{case.id}-{via}"
    names = {
        "existing": str(setup.existing),
        "empty": str(setup.empty),
        "interrupted": str(setup.interrupted),
        "file": str(setup.file),
        "fresh": str(fresh),
    }
    run_config = _fill(case.run_config, names)
    if "output-dir=" not in run_config:
        run_config += f" output-dir='{fresh}'"
    if "num-clients=" not in run_config:
        run_config += f" num-clients={NODES}"
    run_config += " num-server-rounds=1 local-epochs=1"  # should a case ever train, it ends soon
    before = {p: _snapshot(p) for p in (setup.existing, setup.interrupted)}

    if via == "flwr-run":
        # The app from a copy without .venv (`flwr run .` walks every file of its folder: tests/flwr_cli.py).
        log = flwr_run(setup.env, run_config, supernodes=NODES, app=app_copy())
    else:
        import sys as _sys

        _sys.path.insert(0, str(setup.tmp / "usermods"))
        try:
            log = _run_in_process(run_config)
        finally:
            _sys.path.remove(str(setup.tmp / "usermods"))

    tail = log[-4000:]
    assert "Traceback (most recent call last)" not in log, tail
    errors = [line for line in log.splitlines() if line.lstrip().startswith("ERROR")]
    if case.by_flower:
        assert not errors, tail
        assert "Successfully started run" not in log, tail
        for text in case.expect:
            assert text in log, tail
    else:
        assert len(errors) == 1, tail
        for text in case.expect:
            assert _fill(text, names) in errors[0], errors[0]
    # Nothing trained, nothing written: no results folder announced, earlier results intact, no fresh folder.
    assert "results ->" not in log and "round 1:" not in log, tail
    assert {p: _snapshot(p) for p in before} == before
    assert setup.file.read_text() == "not a folder\n"
    assert not fresh.exists()
    assert not any(setup.empty.iterdir())
    assert not (ROOT / RELATIVE_OUT).exists() and not (app_copy() / RELATIVE_OUT).exists()
    assert not (Path(setup.env["FLWR_HOME"]) / RELATIVE_OUT).exists()
