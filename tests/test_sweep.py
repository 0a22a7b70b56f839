"""fedetf-sweep and fedetf-report: plan, resume and failure logic (fast, with a fake runner), progress read from
the results files, the report on synthetic runs, and one real sweep through `flwr run` on digits (its SCAFFOLD
run's ServerApp killed mid-run and continued from its checkpoint when the sweep is rerun, to the uninterrupted run's
results; a third sweep skips it)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.common.config import parse_config_args

from simulations import checkpoint
from simulations.experiments import plan as sweep_plan
from simulations.experiments import report, runner, runs, sweep
from simulations.experiments.progress import Progress
from simulations.experiments.runner import stage_app
from simulations.local import local_superlink
from tests.inprocess import assert_same_results, run_in_process

ROOT = Path(__file__).resolve().parent.parent


def _main(module: Any, argv: list[str]) -> int:
    try:
        module.main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


# ----------------------------------------------------------------------------- the plan


def _plan(*argv: str) -> list[sweep_plan.PlannedRun]:
    args = sweep._parser().parse_args([*argv, "--out", "/tmp/unused"])
    args.argv = list(argv)
    return sweep.prepare(args)[1]


def test_plan_crosses_methods_grid_and_seeds_and_flower_parses_its_run_config() -> None:
    plan = _plan(
        "--methods", "fedavg", "fedgela", "--seeds", "0", "1", "--set", "dataset=digits", "--set", "num-clients=4",
        "--set", "lr=0.05", "--grid", "temperature=0.2,1e-5", "--set", "method-args='{\"a\": 1}'",
    )  # fmt: skip
    names = [r.name for r in plan]
    assert names == [
        "fedavg_seed0",
        "fedgela_temperature=0.2_seed0",
        "fedgela_temperature=1e-5_seed0",
        "fedavg_seed1",
        "fedgela_temperature=0.2_seed1",
        "fedgela_temperature=1e-5_seed1",
    ]
    fedavg, gela = plan[0], plan[2]
    assert "fedgela.temperature" not in fedavg.overrides, "a method's grid key does not multiply other methods"
    assert gela.overrides["fedgela.temperature"] == 1e-5 and gela.grid == {"fedgela.temperature": 1e-5}
    assert {r.num_supernodes for r in plan} == {4} and {r.rounds for r in plan} == {20}
    for run in plan:
        parsed = parse_config_args([sweep_plan.run_config_string(run.overrides)])
        assert parsed == run.overrides and all(type(parsed[k]) is type(v) for k, v in run.overrides.items())
    assert gela.overrides["dataset"] == "digits" and gela.overrides["method-args"] == '{"a": 1}'


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grid", "lrr=1,2"], "unknown run-config key 'lrr'; did you mean lr?"),
        (["--set", "method=fedavg"], "'method' is set by --methods"),
        (["--methods", "fedavg", "--grid", "fedprox.mu=0.1,1"], "a setting of 'fedprox', which is not among --methods"),
        (["--seeds", "0", "0"], "a seed is given twice"),
        (["--grid", "lr=0.1,0.10"], "0.1 is given twice"),
        (["--grid", "dataset='a b','a-b'"], "get the same folder name 'fedgela_dataset=a-b_seed0'"),
        (["--set", "local-epochs"], "allowed: KEY=VALUE"),
        (["--cpus-per-client", "0"], "--cpus-per-client 0: allowed: an integer >= 1"),
    ],
)
def test_bad_arguments_fail_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(sweep, [*argv, "--out", "/tmp/unused", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedetf-sweep: error:") and message in err and "\n" not in err


# ----------------------------------------------------------------------------- resume and failures (fake runner)


def test_seeds_take_ranges() -> None:
    assert sweep.parse_seeds(["0-4"]) == [0, 1, 2, 3, 4] and sweep.parse_seeds(["3", "0-1"]) == [3, 0, 1]
    assert [r.seed for r in _plan("--methods", "fedavg", "--seeds", "0-2")] == [0, 1, 2]
    with pytest.raises(sweep_plan.SweepError, match="ranges such as 0-4"):
        sweep.parse_seeds(["4-0"])


def _write_results(run_dir: Path, run: sweep_plan.PlannedRun, rounds: int, status: str = "finished") -> None:
    defaults = sweep_plan.app_defaults(ROOT)
    config = {**defaults, **run.overrides, "output-dir": str(run_dir)}
    info = {"status": status, "config": config, "seed": run.seed, "method": run.method, "pid": 1 << 30}
    info["timings"] = {"total_seconds": 0.5}
    (run_dir / "run.json").write_text(json.dumps(info))
    r = np.arange(1, rounds + 1)
    pd.DataFrame({"round": r, "personal_acc": 0.5 + 0.1 * r, "generic_acc": 0.4 + 0.1 * r}).to_csv(
        run_dir / "metrics.csv", index=False
    )


def _write_checkpoint(run_dir: Path, rnd: int) -> None:
    """A stand-in checkpoint file: only its format tag and round are read before a resume."""
    torch.save({"format": list(checkpoint.FORMAT), "round": rnd}, run_dir / checkpoint.CHECKPOINT)


@pytest.fixture
def fake_flwr(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace `flwr run` by a fake: `-1.0` fails validation, `interrupt` names a run cut by Ctrl-C after round 1,
    `cut` one whose ServerApp dies after round 1 with a checkpoint."""
    calls: dict[str, Any] = {"executed": [], "resumed": [], "stopped": [], "interrupt": None, "cut": None}

    def execute(self: runner.Runner, run: sweep_plan.PlannedRun, run_dir: Path, log_path: Path, progress: Progress,
                timeout: float | None, on_run_id: Any = None, resume: bool = False) -> runner.Outcome:  # fmt: skip
        calls["resumed" if resume else "executed"].append(run.name)
        log_path.write_text(f"log of {run.name}\n")
        on_run_id("42")
        if "-1.0" in run.name:
            return runner.Outcome(False, "invalid run config: lr=-1.0; allowed: a number > 0", 0.1)
        if resume:
            assert runs.rounds_done(run_dir) == 1, "a resumed run keeps its folder"
        else:
            run_dir.mkdir()
        if run.name in (calls["interrupt"], calls["cut"]):
            _write_results(run_dir, run, 1, status="running")
            progress.poll()
            if run.name == calls["cut"]:
                _write_checkpoint(run_dir, 1)
                return runner.Outcome(False, "its ServerApp's process (pid 1) ended after round 1", 0.1)
            raise KeyboardInterrupt
        _write_results(run_dir, run, 2)
        progress.poll()
        return runner.Outcome(True, None, 0.1, run_id="42")

    monkeypatch.setattr(runner.Runner, "execute", execute)
    monkeypatch.setattr(runner.Runner, "stop", lambda self, run_id: calls["stopped"].append(run_id))
    monkeypatch.setattr(sweep, "superlink_running", lambda env: True)
    return calls


def test_interrupted_sweep_resumes_and_failures_are_recorded(fake_flwr: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    argv = ["--methods", "fedavg", "--seeds", "0", "1", "--grid", "lr=0.01,-1.0", "--out", str(out), "--no-progress"]
    fake_flwr["interrupt"] = "fedavg_lr=0.01_seed1"
    assert _main(sweep, argv) == 130
    state = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in state["runs"]] == ["finished", "failed", "pending", "pending"]
    assert state["runs"][1]["error"] == "invalid run config: lr=-1.0; allowed: a number > 0"
    assert state["report_by"] == ["method", "lr"]
    first_mtime = (out / "runs" / "fedavg_lr=0.01_seed0" / "run.json").stat().st_mtime_ns

    # As after SIGKILL: the cut run still marked running, with its Flower run id, is stopped before it is redone.
    state["runs"][2].update(status="running", run_id="777")
    (out / "sweep.json").write_text(json.dumps(state))
    fake_flwr["interrupt"], fake_flwr["executed"] = None, []
    assert _main(sweep, argv) == 1
    assert fake_flwr["stopped"] == ["777"]
    assert fake_flwr["executed"] == ["fedavg_lr=-1.0_seed0", "fedavg_lr=0.01_seed1", "fedavg_lr=-1.0_seed1"]
    assert fake_flwr["resumed"] == [], "no checkpoint: the run starts afresh"
    assert (out / "runs" / "fedavg_lr=0.01_seed0" / "run.json").stat().st_mtime_ns == first_mtime
    moved = out / "runs" / "fedavg_lr=0.01_seed1.incomplete-1"
    assert runs.status(moved) == "running", "the cut run is kept, not deleted"
    assert runs.finished(out / "runs" / "fedavg_lr=0.01_seed1")
    assert (out / "logs" / "fedavg_lr=0.01_seed1.1.log").exists(), "the cut run's log is kept"
    state = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in state["runs"]] == ["finished", "failed", "finished", "failed"]

    # Nothing left to do but the failing runs; different settings for finished runs are refused.
    fake_flwr["executed"] = []
    assert _main(sweep, argv) == 1 and fake_flwr["executed"] == ["fedavg_lr=-1.0_seed0", "fedavg_lr=-1.0_seed1"]
    assert _main(sweep, [*argv, "--set", "local-epochs=2"]) == 2


def test_a_cut_run_with_a_checkpoint_is_continued_not_redone(
    fake_flwr: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    argv = ["--methods", "fedavg", "fedgela", "--seeds", "0", "--set", "num-server-rounds=2", "--out", str(out)]
    argv.append("--no-progress")
    fake_flwr["cut"] = "fedavg_seed0"
    assert _main(sweep, argv) == 1
    assert json.loads((out / "sweep.json").read_text())["runs"][0]["status"] == "failed"
    fake_flwr["cut"], fake_flwr["executed"] = None, []
    assert _main(sweep, argv) == 0
    assert fake_flwr["resumed"] == ["fedavg_seed0"] and fake_flwr["executed"] == []
    assert "fedavg_seed0: continuing from its checkpoint (rounds 1-1 written)" in capsys.readouterr().out
    assert not list((out / "runs").glob("*.incomplete-*"))
    entry = json.loads((out / "sweep.json").read_text())["runs"][0]
    assert entry["status"] == "finished" and entry["resumed"] is True

    # A cut run whose checkpoint is at its last round cannot be continued: it starts afresh.
    run_dir = out / "runs" / "fedavg_seed0"
    (run_dir / "run.json").write_text(
        json.dumps({**json.loads((run_dir / "run.json").read_text()), "status": "running"})
    )
    _write_checkpoint(run_dir, 2)
    fake_flwr["resumed"] = []
    assert _main(sweep, argv) == 0
    assert fake_flwr["resumed"] == [] and fake_flwr["executed"] == ["fedavg_seed0"]
    assert (out / "runs" / "fedavg_seed0.incomplete-1").is_dir()


def test_the_dry_run_prints_the_resume_free_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert _main(sweep, ["--methods", "fedavg", "--seeds", "0-1", "--out", str(tmp_path), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.count("flwr run . --stream") == 2 and "resume" not in text and text.endswith("2 runs\n")
    assert _main(sweep, ["--set", "resume=true", "--out", str(tmp_path), "--dry-run"]) == 2


@pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")  # Flower's own use of pathspec
def test_the_staged_app_builds_the_fab_of_the_app_without_listing_its_venv(tmp_path: Path) -> None:
    """The sweep's copy of the app: the FAB `flwr run` builds from it equals the one from the app folder; the
    folders .gitignore or Flower exclude and the sweep's own folder are not copied."""
    from flwr.cli.build import build_fab_from_disk

    app = tmp_path / "app"
    files = {
        "pyproject.toml": (ROOT / "pyproject.toml").read_text(),
        ".gitignore": "runs/\n*.log\n/data/\n",
        "pkg/mod.py": "X = 1\n",
        "pkg/conf.yaml": "a: 1\n",
        "pkg/__pycache__/mod.cpython-311.pyc": "",
        "pkg/test_mod.py": "",
        "README.md": "# app\n",
        "sub/build/kept.py": "",  # Flower's build/** is anchored at the root
        "sub/data/kept.json": "{}",  # so is the .gitignore's /data/
        "build/dropped.py": "",
        ".venv/lib/site.py": "",
        "venv/lib/site.py": "",
        ".git/info.json": "{}",
        "runs/r1/run.json": "{}",
        "data/x.json": "{}",
        "run.log": "",
        "sweep/sweep.json": "{}",
    }
    for name, text in files.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    staged = stage_app(app, tmp_path / "staged", skip=[app / "sweep"])
    copied = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert copied == [
        ".git/info.json", ".gitignore", "README.md", "pkg/conf.yaml", "pkg/mod.py", "pkg/test_mod.py", "pyproject.toml",
        "sub/build/kept.py", "sub/data/kept.json",
    ]  # fmt: skip
    shutil.rmtree(app / "sweep")
    assert build_fab_from_disk(staged) == build_fab_from_disk(app)


def test_an_app_that_cannot_be_staged_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (app / "task.py").symlink_to(app / "missing.py")  # skipped, as flwr run skips links
    os.mkfifo(app / "feed.json")  # no file to copy (flwr run would wait on it forever)
    argv = ["--methods", "fedavg", "--seeds", "0", "--out", str(tmp_path / "sweep"), "--app", str(app)]
    assert _main(sweep, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fedetf-sweep: error: --app {app}: cannot copy its files for the runs:") and "\n" not in err


def test_progress_reads_the_rounds_from_metrics_csv(tmp_path: Path) -> None:
    run = _plan("--methods", "fedavg", "--seeds", "0")[0]
    run_dir = tmp_path / "run"
    progress = Progress(total=2, done=0, disable=True)
    progress.start("fedavg_seed0", run_dir, rounds=3, queued=[3])
    progress.poll()  # no folder yet
    assert progress.round == 0 and progress.eta() is None
    run_dir.mkdir()
    for rnd in (1, 2):
        _write_results(run_dir, run, rnd, status="running")
        progress.poll()
        assert progress.round == rnd
    assert progress.eta() is not None, "start-up and one round measured"
    progress.end()
    assert progress.name == "" and progress.teardowns == [], "no teardown: the run ended before its last round"
    resumed = Progress(total=1, done=0, disable=True)
    resumed.start("fedavg_seed0", run_dir, rounds=3, queued=[])
    assert resumed.round == 2 and resumed.first_round == 2, "a resumed run starts at its written rounds"


def test_error_line_of_a_failed_run(tmp_path: Path) -> None:
    raw = ["\x1b[92mINFO \x1b[0m:      Starting", "\x1b[91mERROR \x1b[0m:     invalid run config: lr=-1.0; allowed: x"]
    raw.append("ERROR : later")
    assert runner.first_error([runner.ANSI.sub("", line) for line in raw]) == "invalid run config: lr=-1.0; allowed: x"
    assert runs.recorded_error(tmp_path) is None
    (tmp_path / "run.json").write_text(json.dumps({"status": "failed", "error": "all 4 sampled clients failed\nmore"}))
    assert runs.recorded_error(tmp_path) == "all 4 sampled clients failed" and not runs.finished(tmp_path)
    assert "exited with code 0" in runner.fallback_error(["a", "Error: b"], 0)


# ----------------------------------------------------------------------------- the report on synthetic runs

ROUNDS = np.arange(1, 7)


def _synthetic_run(root: Path, method: str, seed: int, nc: bool, temperature: float | None = None) -> Path:
    name = f"{method}_seed{seed}" if temperature is None else f"{method}_temperature={temperature}_seed{seed}"
    d = root / "runs" / name
    d.mkdir(parents=True)
    shift = 0.1 if method == "fedgela" else 0.0
    metrics: dict[str, Any] = {"round": ROUNDS}
    for view in ("generic_acc", "generic_bacc", "personal_acc", "personal_bacc", "personal_acc_before",
                 "personal_bacc_before", "personal_acc_client_mean"):  # fmt: skip
        metrics[view] = 0.4 + 0.05 * ROUNDS + shift + 0.01 * seed
    if nc:
        metrics |= {"nc1": 1.0 / ROUNDS, "nc_equiangularity": 0.1 / ROUNDS, "nc_self_duality": 0.5 / ROUNDS}
        metrics |= {
            "angle_missing": 60 + ROUNDS,
            "angle_present": 95 + 0 * ROUNDS,
            "space_missing_share": 0.1 + 0 * ROUNDS,
        }
    pd.DataFrame(metrics).to_csv(d / "metrics.csv", index=False)
    rows = [
        {"round": r, "partition_id": p, "personal_acc": 0.1 * p + 0.01 * r + shift + 0.01 * seed}
        for r in ROUNDS
        for p in range(3)
    ]
    pd.DataFrame(rows).to_csv(d / "clients.csv", index=False)
    config = {"method": method, "seed": seed, "local-epochs": 1, "fedgela.temperature": temperature or 0.2}
    settings = {"fedgela.temperature": temperature or 0.2} if method == "fedgela" else {}
    info = {"status": "finished", "config": config, "seed": seed, "method": method, "method_settings": settings}
    (d / "run.json").write_text(json.dumps(info))
    return d


def _synthetic_sweep(root: Path, nc: bool) -> Path:
    entries = [{"name": _synthetic_run(root, "fedavg", s, nc).name, "status": "finished"} for s in (0, 1)]
    entries += [{"name": _synthetic_run(root, "fedgela", s, nc, 0.2).name, "status": "finished"} for s in (0, 1)]
    entries.append({"name": "fedgela_temperature=-1.0_seed0", "status": "failed", "error": "invalid run config: x"})
    state = {
        "command": ["fedetf-sweep", "--methods", "fedavg", "fedgela"],
        "report_by": ["method", "fedgela.temperature"],
    }
    (root / "sweep.json").write_text(json.dumps({**state, "runs": entries}))
    return root


def test_report_on_a_synthetic_sweep(tmp_path: Path) -> None:
    root = _synthetic_sweep(tmp_path / "sweep", nc=True)
    assert _main(report, [str(root)]) == 0
    out = root / "report"
    table = pd.read_csv(out / "table.csv")
    assert list(table["method"]) == ["fedavg", "fedgela"] and list(table["fedgela.temperature"]) == ["-", "0.2"]
    gela = table.iloc[1]
    # the last 5 of rounds 1..6 are 2..6 (mean round 4): 0.4 + 0.2 + 0.1 + seed offsets 0.00/0.01 -> 0.705
    assert gela["personal_acc_last5"] == pytest.approx(0.705) and gela["personal_acc_diff"] == pytest.approx(0.1)
    assert gela["personal_acc_wins"] == 2 and gela["generic_acc_best"] == pytest.approx(0.705 + 0.1)
    md = (out / "table.md").read_text()
    other = md[md.index("## Other views: mean of the last 5 rounds") :]
    for view in ("personal_acc_before", "personal_acc_client_mean", "generic_bacc", "personal_bacc"):
        assert f"| {view}, mean of last 5 rounds [%] |" in other
    # rounds 2..6 (mean round 4): 0.4 + 0.2 + 0.1 (fedgela) + 0.00 or 0.01 (seed); fedgela - fedavg = 0.1 per seed
    assert "| fedgela | 0.2 | 70.5 ± 0.5 | +10.0 ± 0.0 | 2/2 |" in md
    assert "failed: fedgela_temperature=-1.0_seed0: invalid run config: x" in md
    heat = pd.read_csv(out / "heatmap.csv", index_col=0)
    assert list(heat.columns) == ["fedavg", "fedgela fedgela.temperature=0.2"], "labels show only used settings"
    # client 2, fedavg: rounds 2..6 -> 0.2 + 0.04, seeds 0 and 1 -> + 0.005
    assert heat.loc[2, "fedavg"] == pytest.approx(0.245)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["curves_acc.png", "curves_bacc.png", "heatmap.png", "nc1.png", "nc_angles.png",
                    "nc_equiangularity.png", "nc_self_duality.png", "nc_space_missing_share.png"]  # fmt: skip
    page = (out / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(pngs) and page.count("<table") == 3
    assert "fedgela_temperature=-1.0_seed0" in page and 'src="http' not in page


def test_report_without_nc_columns_notes_it_and_needs_out_for_run_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _synthetic_sweep(tmp_path / "sweep", nc=False)
    dirs = sorted((root / "runs").glob("*"))
    assert _main(report, [str(r) for r in dirs]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    out = tmp_path / "rep"
    assert _main(report, [str(r) for r in dirs] + ["--out", str(out)]) == 0
    assert "neural-collapse figures skipped" in capsys.readouterr().out
    assert not list(out.glob("nc*.png")) and "neural-collapse figures skipped" in (out / "index.html").read_text()
    assert list(pd.read_csv(out / "table.csv").columns[:1]) == ["method"], "no setting differs within a method"
    assert _main(report, [str(tmp_path / "nothing")]) == 2


# ----------------------------------------------------------------------------- a real sweep through `flwr run`

FLWR = shutil.which("flwr", path=str(Path(sys.executable).parent))
#: One run: every `flwr run` pays Ray's start-up, so the sweep's bookkeeping over several runs, seeds and failing
#: runs is tested above with a fake runner, and the sweep's reading of a real failing run's error line in
#: test_flwr_cli. The run is SCAFFOLD (each client's c_i is state that must follow its partition, on the nodes and
#: through the checkpoint), 4 clients, 3 of them per round.
RUN = {"dataset": "digits", "num-clients": 4, "fraction-train": 0.75, "num-server-rounds": 3, "local-epochs": 1}
#: Two SuperNodes serve the four clients in turn: each client's c_i travels through the run's state store. Two CPUs
#: per client: one Ray actor (each costs about 8 s of CPU to start, torch's imports), with one torch thread (the
#: OMP_NUM_THREADS=1 of tests/conftest.py). Client state kept in the actor's module globals would still show: the
#: continued run's actor is a new process, and its results must equal the uninterrupted run's.
SWEEP_ARGS = [
    "--methods",
    "scaffold",
    "--seeds",
    "0",
    "--no-progress",
    "--num-supernodes",
    "2",
    "--cpus-per-client",
    "2",
]
SWEEP_ARGS += [arg for key, value in RUN.items() for arg in ("--set", f"{key}={value}")]
CUT = "scaffold_seed0"  # its ServerApp is killed once round 1 is in metrics.csv (and checkpointed)


def _entries(out: Path) -> dict[str, dict[str, Any]]:
    try:
        return {r["name"]: r for r in json.loads((out / "sweep.json").read_text())["runs"]}
    except (OSError, ValueError):
        return {}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Start the sweep; once its run has round 1 in metrics.csv and a checkpoint, SIGKILL that run's ServerApp
    process (the pid its run.json records); rerun the sweep (it continues the run; meanwhile the uninterrupted run
    in-process), rerun it once more (nothing left to do) and build the report.

    Its `flwr run`s go to this test process's local SuperLink (shared with other real runs here)."""
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "sweep"
    env = local_superlink().env
    # The default app: this checkout, which the sweep stages without its .venv (test_the_staged_app_...).
    cmd = [sys.executable, "-m", "simulations.experiments.sweep", *SWEEP_ARGS, "--out", str(out)]
    cut_dir = out / "runs" / CUT
    result: dict[str, Any] = {"out": out}
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        killed = None
        while first.poll() is None and killed is None:
            pid = runs.writer_pid(cut_dir)
            # Round 1 is in metrics.csv and its checkpoint (written just after the row) is there: kill.
            ready = runs.rounds_done(cut_dir) >= 1 and (cut_dir / checkpoint.CHECKPOINT).exists()
            if ready and pid and runs.status(cut_dir) == "running":
                assert "flwr-simulation" in _cmdline(pid), _cmdline(pid)
                os.kill(pid, signal.SIGKILL)
                killed = pid
            time.sleep(0.1)
        stdout, stderr = first.communicate(timeout=1800)
        result |= {"first_rc": first.returncode, "first_out": stdout, "first_err": stderr, "killed": killed}
        result["before"] = _entries(out)
        result["cut_metrics"] = pd.read_csv(cut_dir / "metrics.csv")
        result["cut_status"] = runs.status(cut_dir)
        second = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Meanwhile the same run uninterrupted on in-process nodes, one torch thread on the CPU as in a Ray actor.
            ref = tmp / "uninterrupted"
            outcome = run_in_process({**RUN, "method": "scaffold", "seed": 0, "device": "cpu", "output-dir": str(ref)})
            stdout, stderr = second.communicate(timeout=1800)
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
        assert outcome.exit is None, outcome.lines[-20:]
        result |= {"second_rc": second.returncode, "second_out": stdout, "second_err": stderr, "uninterrupted": ref}
        result["mtime"] = (cut_dir / "run.json").stat().st_mtime_ns
        with contextlib.redirect_stdout(io.StringIO()) as third, contextlib.redirect_stderr(io.StringIO()) as err:
            result["third_rc"] = _main(sweep, cmd[3:])  # in this process: it has nothing left to run
        result |= {"third_out": third.getvalue(), "third_err": err.getvalue()}
        with contextlib.redirect_stdout(io.StringIO()) as text, contextlib.redirect_stderr(text):
            result["report_rc"] = _main(report, [str(out)])
        result["report_out"] = text.getvalue()
        yield result
    finally:
        if first.poll() is None:  # an assertion above failed: do not leave the sweep running
            first.kill()
            first.wait()


needs_flwr = pytest.mark.skipif(FLWR is None, reason="flwr CLI not installed")


@pytest.mark.slow
@needs_flwr
def test_a_run_cut_mid_way_is_continued_from_its_checkpoint(real_sweep: dict[str, Any]) -> None:
    out: Path = real_sweep["out"]
    first_log = real_sweep["first_out"] + real_sweep["first_err"][-3000:]
    assert real_sweep["killed"] is not None and real_sweep["first_rc"] == 1, first_log
    before, cut_dir = real_sweep["before"], out / "runs" / CUT
    assert before[CUT]["status"] == "failed" and "rerun the sweep to resume it" in before[CUT]["error"], before[CUT]
    written = real_sweep["cut_metrics"]["round"].tolist()
    assert real_sweep["cut_status"] == "running" and written == list(range(1, len(written) + 1)) and written
    # The rerun continues it in the same folder: rounds 1..3 once each, the rows before the resume unchanged.
    second_log = real_sweep["second_out"] + real_sweep["second_err"][-3000:]
    assert real_sweep["second_rc"] == 0, second_log
    assert f"{CUT}: continuing from its checkpoint" in real_sweep["second_out"], second_log
    after = pd.read_csv(cut_dir / "metrics.csv")
    assert after["round"].tolist() == [1, 2, 3], second_log
    info = runs.run_info(cut_dir)
    assert info is not None and info.status == "finished" and len(info.resumes) == 1
    start = info.resumes[0]["from_round"]
    assert 1 <= start <= len(written), "continued from a checkpoint written before the kill"
    pd.testing.assert_frame_equal(after.iloc[:start], real_sweep["cut_metrics"].iloc[:start], check_exact=True)
    # Killed on the Ray engine and continued: the uninterrupted run's files, so every client's c_i came back from
    # the checkpoint and followed its partition across the two workers.
    assert_same_results(cut_dir, real_sweep["uninterrupted"])
    assert not list((out / "runs").glob("*.incomplete-*")) and _entries(out)[CUT]["resumed"] is True
    assert runs.finished(cut_dir) and (out / "logs" / f"{CUT}.log").exists()
    assert (out / "logs" / f"{CUT}.1.log").exists(), "the cut attempt's log is kept"


@pytest.mark.slow
@needs_flwr
def test_real_sweep_skips_finished_runs_and_produces_every_artefact(real_sweep: dict[str, Any]) -> None:
    out: Path = real_sweep["out"]
    log = real_sweep["third_out"] + real_sweep["third_err"][-3000:]
    # The third sweep finds the run finished and leaves it alone.
    assert real_sweep["third_rc"] == 0, log
    assert "1 of 1 runs finished earlier are skipped" in real_sweep["third_out"], log
    assert (out / "runs" / CUT / "run.json").stat().st_mtime_ns == real_sweep["mtime"], f"{CUT} was redone"
    assert [r["status"] for r in _entries(out).values()] == ["finished"]
    assert real_sweep["report_rc"] == 0, real_sweep["report_out"]
    assert "| scaffold | " in real_sweep["report_out"] and "## Best round" in real_sweep["report_out"]
    rep = out / "report"
    table = pd.read_csv(rep / "table.csv")
    assert list(table["method"]) == ["scaffold"] and list(table["runs"]) == [1]
    for name in ("table.md", "curves_acc.png", "curves_bacc.png", "heatmap.png", "index.html"):
        assert (rep / name).stat().st_size > 0
    page = (rep / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 3 and "<table" in page and 'src="http' not in page
