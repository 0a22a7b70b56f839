"""fedetf ServerApp: validate, hand-shake, run the strategy, evaluate, write results."""

from __future__ import annotations

import json
import random
import time
import traceback
from collections.abc import Callable
from logging import DEBUG, ERROR, INFO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fedetf.methods import LocalMethod
from fedetf.train import evaluate, generic_diagnostics
from simulations import checkpoint
from simulations.client_app import STATE_REPLY, STATE_RESTORE
from simulations.config import ConfigError, RunConfig, parse_run_config
from simulations.grid import PartitionOrderedGrid
from simulations.results import DIAGNOSTIC_CLIENT_COLUMNS, RunRecorder, format_summary, fresh_output_dir
from simulations.task import device, federation, make_method, model_buffer, round_seed
from strategies.registry import StrategyError, accepted_kwargs, build_strategy, server_class

app = ServerApp()


class SetupError(RuntimeError):
    """The run cannot start; the message is one line."""


def _prepare(context: Context) -> tuple[RunConfig, Any]:
    """Validate everything that can be checked before any node is contacted."""
    cfg = parse_run_config(context.run_config)
    device(cfg)
    federation(cfg)  # partition errors surface here, before training
    method = make_method(cfg)
    server = cfg.server if cfg.server != "auto" else type(method).server
    key = "server" if cfg.server != "auto" else f"{method.name}.server"
    try:
        cls = server_class(type(method), cfg.server)
    except StrategyError:
        raise
    except Exception as exc:  # a user module that raises while it is imported
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"invalid run config: {key}={server!r}; allowed: an importable 'package.module:ClassName' "
            f"(importing it raised {type(exc).__name__}: {reason})"
        ) from None
    accepted = accepted_kwargs(cls)
    if accepted is not None and (unknown := sorted(set(cfg.server_kwargs) - accepted)):
        raise ConfigError(
            f"invalid run config: server-args={cfg.server_args!r}; {cls.__name__} does not take {unknown}; "
            f"allowed: a JSON object of its arguments {sorted(accepted)}"
        )
    try:
        strategy = build_strategy(
            cls,
            num_clients=cfg.num_clients,
            fraction_train=cfg.fraction_train,
            weighted_by_key="num-batches" if cfg.aggregation_weight == "batches" else "num-examples",
            extra=cfg.server_kwargs,
            method_kwargs=method.server_kwargs(),
        )
    except StrategyError:
        raise
    except Exception as exc:  # e.g. a server-args value the strategy refuses
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"invalid run config: server={server!r} server-args={cfg.server_args!r}; building {cls.__name__} "
            f"raised {type(exc).__name__}: {reason}"
        ) from None
    return cfg, strategy


def _check_nodes(grid: PartitionOrderedGrid, cfg: RunConfig) -> None:
    mapping = grid.handshake(expected=cfg.num_clients)
    if len(mapping) != cfg.num_clients or grid.num_partitions != {cfg.num_clients}:
        raise SetupError(
            f"invalid run config: num-clients={cfg.num_clients} but the federation has {len(mapping)} supernodes; "
            f"set both alike, e.g. flwr run . --run-config 'num-clients={len(mapping)}' or "
            f"--federation-config 'num-supernodes={cfg.num_clients}'"
        )


def _notes(cfg: RunConfig) -> list[str]:
    """What the run does differently from what its settings might suggest."""
    notes = []
    if cfg.natural:
        notes.append(
            f"dataset={cfg.dataset!r} has natural clients: partition, classes-per-client and dirichlet-beta are ignored"
        )
    if cfg.model_name == "efficientnet_b0" and not cfg.pretrained_weights:
        notes.append("efficientnet_b0 starts from scratch (no pretrained-weights file given)")
    return notes


@app.main()
def main(grid: Grid, context: Context, on_round: Callable[[int], None] | None = None) -> None:
    """Run one federated experiment end to end (``on_round(r)`` after round r's results: a test hook)."""
    try:
        cfg, strategy = _prepare(context)
    except (ConfigError, StrategyError, ValueError, RuntimeError) as exc:
        log(ERROR, "%s", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise SystemExit(2) from None
    except Exception as exc:  # unforeseen: still one line (where it happened); the traceback at DEBUG level
        where = traceback.extract_tb(exc.__traceback__)[-1]
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        log(
            ERROR,
            "cannot start the run: %s: %s (at %s:%d); nothing was trained",
            type(exc).__name__,
            reason,
            Path(where.filename).name,
            where.lineno or 0,
        )
        log(DEBUG, "%s", traceback.format_exc())
        raise SystemExit(2) from None
    # The federation's size, before any output folder is made (`run` checks the partitions again).
    nodes = PartitionOrderedGrid(grid).wait_for_nodes(cfg.num_clients)
    if len(nodes) != cfg.num_clients:
        log(
            ERROR,
            "invalid run config: num-clients=%d but the federation has %d supernodes; allowed: num-clients equal "
            "to num-supernodes, e.g. flwr run . --run-config 'num-clients=%d' or --federation-config "
            "'num-supernodes=%d'",
            cfg.num_clients,
            len(nodes),
            len(nodes),
            cfg.num_clients,
        )
        raise SystemExit(2)
    run(grid, cfg, strategy, on_round)


def _client_rows(replies: list[Message]) -> list[dict[str, Any]]:
    """Per-client rows of a round's successful train replies."""
    rows = []
    for r in replies:
        if r.has_error():
            continue
        m = r.content["metrics"]
        rows.append(
            {
                "partition_id": int(m["partition-id"]),
                "personal_acc": m["personal-acc"],
                "personal_bacc": m["personal-bacc"],
                "personal_acc_before": m["personal-acc-before"],
                "personal_bacc_before": m["personal-bacc-before"],
                "train_loss": m["train-loss"],
                "train_examples": int(m["num-examples"]),
                "test_examples": int(m["test-examples"]),
                "num_batches": int(m["num-batches"]),
                "correct": int(m["personal-correct"]),
                "correct_before": int(m["personal-correct-before"]),
                **{c: m[c.replace("_", "-")] for c in DIAGNOSTIC_CLIENT_COLUMNS if c.replace("_", "-") in m},
            }
        )
    return rows


def _round_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The round's personal view, pooled over its clients (and the plain client mean)."""
    n_test = sum(r["test_examples"] for r in rows)
    n_train = sum(r["train_examples"] for r in rows)
    nan = float("nan")

    def weighted(col: str, by: str, n: int) -> float:
        return sum(r[col] * r[by] for r in rows) / n if n else nan

    return {
        "personal_acc": sum(r["correct"] for r in rows) / n_test if n_test else nan,
        "personal_bacc": weighted("personal_bacc", "test_examples", n_test),
        "personal_acc_before": sum(r["correct_before"] for r in rows) / n_test if n_test else nan,
        "personal_bacc_before": weighted("personal_bacc_before", "test_examples", n_test),
        "personal_acc_client_mean": sum(r["personal_acc"] for r in rows) / len(rows) if rows else nan,
        "train_loss": weighted("train_loss", "train_examples", n_train),
        "num_clients": len(rows),
        "train_examples": n_train,
        "test_examples": n_test,
        **{c: float(np.nanmean([r[c] for r in rows])) for c in DIAGNOSTIC_CLIENT_COLUMNS if rows and c in rows[0]},
    }


def _received(strategy: Any) -> dict[str, dict[str, torch.Tensor]]:
    """The strategy's broadcast records (e.g. a rotated ETF), as the clients receive them."""
    return {k: r.to_torch_state_dict() for k, r in getattr(strategy, "broadcast", {}).items()}


def _describe(recorder: RunRecorder, cfg: RunConfig, method: LocalMethod, strategy: Any) -> None:
    recorder.extra["notes"] = _notes(cfg)
    recorder.extra["method"] = method.name
    recorder.extra["method_settings"] = cfg.method_settings_dict()
    recorder.extra["strategy_class"] = f"{type(strategy).__module__}:{type(strategy).__qualname__}"
    recorder.extra["personal_view"] = (
        "each client's personal model on its own test split (personal_acc: after local training; "
        "personal_acc_before: the received model with the client's own adaptation and state)"
        if method.personal_model
        else "no personal model: the personal view is the global model on each client's own test split "
        "(personal_acc_before); personal_acc is the locally trained model, before averaging"
    )


def client_error(reply: Message) -> str:
    """The one-line reason of a client's error reply (Flower wraps the exception's text)."""
    reason = reply.error.reason.strip().splitlines()[-1] if reply.error.reason.strip() else "unknown error"
    return reason.split("Message: ", 1)[-1].rstrip("'>").strip()


class _Run:
    """The ServerApp's side of one run: collects client rows and states, evaluates, records, checkpoints."""

    def __init__(
        self, cfg: RunConfig, strategy: Any, recorder: RunRecorder, offset: int, on_round: Callable[[int], None] | None
    ) -> None:
        self.cfg, self.strategy, self.recorder, self.offset = cfg, strategy, recorder, offset
        self.on_round = on_round
        self.fed = federation(cfg)
        self.method = make_method(cfg)
        self.dev = device(cfg)
        self.model, self.initial = model_buffer(self.method)
        self.test_loader = self.fed.global_test_loader(cfg.num_workers)
        self.pending: dict[str, Any] = {}
        self.client_states: dict[int, dict[str, torch.Tensor]] = {}
        self.round_start = time.time()

    @property
    def send_states(self) -> bool:
        """Clients send their state with replies only when there is a checkpoint to put it in."""
        return self.cfg.checkpoint_every > 0

    def on_train_replies(self, replies: list[Message]) -> None:
        failed = [r for r in replies if r.has_error()]
        if replies and len(failed) == len(replies):
            reason = client_error(failed[0])
            raise RuntimeError(f"all {len(replies)} sampled clients failed this round; first error: {reason}")
        for r in replies:  # states go to the checkpoint, never to the strategy
            if not r.has_error() and STATE_REPLY in r.content:
                pid = int(r.content["metrics"]["partition-id"])
                self.client_states[pid] = dict(r.content[STATE_REPLY].to_torch_state_dict())
                del r.content[STATE_REPLY]
        self.pending["clients"] = _client_rows(replies)
        self.pending["failed"] = len(failed)

    def evaluate_fn(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        cfg, method = self.cfg, self.method
        true_round = server_round
        if 0 < server_round <= self.offset:  # done before the resume: nothing ran, nothing to record
            return MetricRecord({})
        method.load(self.model, arrays.to_torch_state_dict(), self.initial, {}, _received(self.strategy))
        gen = evaluate(self.model, self.test_loader, personal=False, device=self.dev)
        if not np.isfinite(gen.loss) and gen.num_examples:
            raise RuntimeError(
                f"the global model became non-finite after round {true_round}; lower lr "
                f"(now {cfg.lr}) or, for ETF methods, raise the temperature"
            )
        metrics = MetricRecord({"generic-acc": gen.acc, "generic-bacc": gen.bacc})
        if server_round == 0:  # the initial (or resumed) model: nothing new to record
            log(
                INFO,
                "round %d (%s model): generic acc %.4f",
                self.offset,
                "resumed" if self.offset else "initial",
                gen.acc,
            )
            self.round_start = time.time()
            return metrics
        rows = self.pending.pop("clients", [])
        for row in rows:
            row["round"] = true_round
        self.recorder.add_clients([{k: v for k, v in row.items() if not k.startswith("correct")} for row in rows])
        diagnostics = {}
        if cfg.diagnostics:
            diagnostics = generic_diagnostics(self.model, self.test_loader, self.fed.info.num_classes, self.dev)
        now = time.time()
        row = {
            "round": true_round,
            "generic_acc": gen.acc,
            "generic_bacc": gen.bacc,
            "generic_loss": gen.loss,
            **_round_row(rows),
            "failed_clients": self.pending.pop("failed", 0),
            "round_seconds": now - self.round_start,
            **diagnostics,
        }
        self.recorder.add_round(row)  # results first: a checkpoint never runs ahead of them
        every = cfg.checkpoint_every
        if every and (true_round % every == 0 or true_round == cfg.num_server_rounds):
            checkpoint.save(
                self.recorder.out_dir,
                server_round=true_round,
                arrays=arrays,
                strategy=self.strategy,
                client_states=self.client_states,
                config=self.recorder.config,
            )
        self.round_start = time.time()
        log(
            INFO,
            "round %d: personal acc %.4f (before training %.4f) | generic acc %.4f bacc %.4f | train loss %.4f",
            true_round,
            row["personal_acc"],
            row["personal_acc_before"],
            gen.acc,
            gen.bacc,
            row["train_loss"],
        )
        metrics["personal-acc"] = row["personal_acc"]
        if self.on_round is not None:
            self.on_round(true_round)
        return metrics


def _wrap_rounds(strategy: Any, seed: int, done: int) -> None:
    """Seed each round's client sampling, and skip the rounds a resumed run has done already.

    Flower samples clients with the global ``random``, which its own background
    threads (heartbeats, retry jitter) also draw from at times that vary; reseeding
    right before each round's ``configure_train`` makes the sample a pure function
    of (seed, round). A resumed run replays rounds ``1..done`` as no-ops (no
    messages, no aggregation), so every hook of any strategy still sees true round
    numbers (FedAdam's bias correction depends on them).
    """
    configure, aggregate = strategy.configure_train, strategy.aggregate_train

    def configure_train(server_round: int, *args: Any, **kwargs: Any) -> Any:
        if server_round <= done:
            return []
        random.seed(round_seed(seed, server_round, -1))
        return configure(server_round, *args, **kwargs)

    def aggregate_train(server_round: int, replies: Any) -> Any:
        return (None, None) if server_round <= done else aggregate(server_round, replies)

    strategy.configure_train, strategy.aggregate_train = configure_train, aggregate_train


def _resume_point(cfg: RunConfig, strategy: Any) -> tuple[Path, dict[str, Any]]:
    """Check that ``cfg.output_dir`` holds an unfinished run of the same config; load its checkpoint."""
    out = Path(cfg.output_dir)
    info_path = out / "run.json"
    if not info_path.is_file():
        raise SetupError(f"cannot resume: {info_path} does not exist; allowed: resume=true on an interrupted run")
    info = json.loads(info_path.read_text())
    if info.get("status") == "finished":
        raise SetupError(f"cannot resume: the run in {out} finished; start a new one with another output-dir")
    payload = checkpoint.load(out)
    ours = {k: v for k, v in cfg.to_dict().items() if k != "resume"}
    theirs = {k: v for k, v in payload["config"].items() if k != "resume"}
    if ours != theirs:
        diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        shown = ", ".join(f"{k}={theirs.get(k)!r} (now {ours.get(k)!r})" for k in diff[:3])
        raise SetupError(f"cannot resume {out}: its config differs in {shown}; resume with the same config")
    if payload["round"] >= cfg.num_server_rounds:
        raise SetupError(f"cannot resume: the checkpoint in {out} is at the last round {payload['round']}")
    return out, payload


def run(grid: Grid, cfg: RunConfig, strategy: Any, on_round: Callable[[int], None] | None = None) -> RunRecorder:
    """Run ``strategy`` for ``cfg`` on ``grid`` (or continue it, with ``resume``); return the recorder."""
    random.seed(cfg.seed)  # Flower's node sampling uses the global `random`
    torch.manual_seed(cfg.seed)
    try:
        if cfg.resume:
            out_dir, payload = _resume_point(cfg, strategy)
        else:
            out_dir, payload = fresh_output_dir(cfg.output_dir, cfg.method, cfg.dataset), None
    except (SetupError, FileExistsError, checkpoint.CheckpointError) as exc:
        log(ERROR, "%s", exc)
        raise SystemExit(2) from None
    offset = payload["round"] if payload else 0
    config = {k: v for k, v in cfg.to_dict().items() if k != "resume"}
    recorder = (
        RunRecorder.resume(out_dir, config, cfg.diagnostics, offset)
        if payload
        else RunRecorder(out_dir, config, cfg.diagnostics)
    )
    state = _Run(cfg, strategy, recorder, offset, on_round)
    ordered = PartitionOrderedGrid(grid, state.on_train_replies)
    try:
        _check_nodes(ordered, cfg)
    except SetupError as exc:
        log(ERROR, "%s", exc)
        raise SystemExit(2) from None
    initial_arrays = ArrayRecord(state.method.shared_state(state.initial))  # not the model: a reused buffer
    _wrap_rounds(strategy, cfg.seed, offset)
    if payload:
        checkpoint.restore_strategy(strategy, payload["strategy"])
        checkpoint.restore_random(payload)
        initial_arrays = checkpoint.global_arrays(payload)
        state.client_states = checkpoint.client_states(payload)
        ordered.private_records = {pid: {STATE_RESTORE: ArrayRecord(s)} for pid, s in state.client_states.items()}
        log(INFO, "resuming %s after round %d", out_dir, offset)
    for note in _notes(cfg):
        log(INFO, "note: %s", note)
    _describe(recorder, cfg, state.method, strategy)
    log(
        INFO,
        "fedetf: method %s, server %s, on %s/%s, %d clients; results -> %s",
        state.method.name,
        type(strategy).__name__,
        cfg.dataset,
        cfg.partition,
        cfg.num_clients,
        out_dir,
    )
    recorder.write()
    t0 = time.time()
    train_config = {"method": state.method.name, "local-epochs": cfg.local_epochs}
    if state.send_states:
        train_config["send-state"] = True
    try:
        strategy.start(
            grid=ordered,
            initial_arrays=initial_arrays,
            num_rounds=cfg.num_server_rounds,
            train_config=ConfigRecord(train_config),
            evaluate_config=ConfigRecord({"method": state.method.name}),
            evaluate_fn=state.evaluate_fn,
        )
    except Exception as exc:
        recorder.write(status="failed", error=str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        raise
    recorder.timings["train_seconds"] = recorder.timings.get("train_seconds", 0.0) + time.time() - t0
    recorder.write(status="finished")
    log(INFO, "fedetf results in %s\n%s", out_dir, format_summary(recorder.metrics))
    return recorder


__all__ = ["app", "main", "run"]
