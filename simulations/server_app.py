"""fedetf ServerApp: validate, hand-shake, run the strategy, evaluate, write results."""

from __future__ import annotations

import random
import time
from logging import ERROR, INFO
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fedetf.train import evaluate
from simulations.config import ConfigError, RunConfig, parse_run_config
from simulations.grid import PartitionOrderedGrid
from simulations.results import RunRecorder, format_summary, fresh_output_dir
from simulations.task import device, federation, local_method, method_name
from strategies.registry import StrategyError, build_strategy, resolve_strategy

app = ServerApp()


class SetupError(RuntimeError):
    """The run cannot start; the message is one line."""


def _prepare(context: Context) -> tuple[RunConfig, Any]:
    """Validate everything that can be checked before any node is contacted."""
    cfg = parse_run_config(context.run_config)
    cls = resolve_strategy(cfg.strategy)
    strategy = build_strategy(
        cls,
        num_clients=cfg.num_clients,
        fraction_train=cfg.fraction_train,
        weighted_by_key="num-batches" if cfg.aggregation_weight == "batches" else "num-examples",
        extra=cfg.strategy_kwargs,
    )
    device(cfg)
    federation(cfg)  # partition errors surface here, before training
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
def main(grid: Grid, context: Context) -> None:
    """Run one federated experiment end to end."""
    try:
        cfg, strategy = _prepare(context)
    except (ConfigError, StrategyError, ValueError) as exc:
        log(ERROR, "%s", str(exc).splitlines()[0])
        raise SystemExit(2) from None
    run(grid, cfg, strategy)


def run(grid: Grid, cfg: RunConfig, strategy: Any) -> RunRecorder:
    """Run ``strategy`` for ``cfg`` on ``grid``; return the recorder with all results."""
    random.seed(cfg.seed)  # Flower's node sampling uses the global `random`
    torch.manual_seed(cfg.seed)
    fed = federation(cfg)
    method = local_method(cfg, method_name(cfg))
    dev = device(cfg)
    model = method.build_model()
    test_loader = fed.global_test_loader(cfg.num_workers)
    pending: dict[str, Any] = {}

    def on_train_replies(replies: list[Message]) -> None:
        failed = [r for r in replies if r.has_error()]
        if replies and len(failed) == len(replies):
            reason = failed[0].error.reason.strip().splitlines()[-1]
            raise RuntimeError(f"all {len(replies)} sampled clients failed this round; first error: {reason}")
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
                    "train_loss": m["train-loss"],
                    "train_examples": int(m["num-examples"]),
                    "test_examples": int(m["test-examples"]),
                    "num_batches": int(m["num-batches"]),
                    "correct": int(m["personal-correct"]),
                }
            )
        pending["clients"] = rows

    ordered = PartitionOrderedGrid(grid, on_train_replies)
    try:
        _check_nodes(ordered, cfg)
        out_dir = fresh_output_dir(cfg.output_dir, cfg.strategy, cfg.dataset)
    except (SetupError, FileExistsError) as exc:
        log(ERROR, "%s", exc)
        raise SystemExit(2) from None
    for note in _notes(cfg):
        log(INFO, "note: %s", note)
    recorder = RunRecorder(out_dir, cfg.to_dict())
    recorder.extra["notes"] = _notes(cfg)
    recorder.extra["method"] = method.name
    recorder.extra["strategy_class"] = f"{type(strategy).__module__}:{type(strategy).__qualname__}"
    log(
        INFO,
        "fedetf: %s (client method %s) on %s/%s, %d clients; results -> %s",
        type(strategy).__name__,
        method.name,
        cfg.dataset,
        cfg.partition,
        cfg.num_clients,
        out_dir,
    )
    round_start = [time.time()]

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        method.load_global(model, arrays.to_torch_state_dict())
        gen = evaluate(model, test_loader, personal=False, device=dev)
        if server_round == 0:
            log(INFO, "round 0 (initial model): generic acc %.4f", gen.acc)
            round_start[0] = time.time()
            return MetricRecord({"generic-acc": gen.acc, "generic-bacc": gen.bacc})
        rows = pending.pop("clients", [])
        for row in rows:
            row["round"] = server_round
        recorder.add_clients([{k: v for k, v in row.items() if k != "correct"} for row in rows])
        n_test = sum(r["test_examples"] for r in rows)
        n_train = sum(r["train_examples"] for r in rows)
        personal_acc = sum(r["correct"] for r in rows) / n_test if n_test else float("nan")
        personal_bacc = (
            (sum(r["personal_bacc"] * r["test_examples"] for r in rows) / n_test) if n_test else float("nan")
        )
        train_loss = (sum(r["train_loss"] * r["train_examples"] for r in rows) / n_train) if n_train else float("nan")
        now = time.time()
        recorder.add_round(
            {
                "round": server_round,
                "generic_acc": gen.acc,
                "generic_bacc": gen.bacc,
                "generic_loss": gen.loss,
                "personal_acc": personal_acc,
                "personal_bacc": personal_bacc,
                "train_loss": train_loss,
                "num_clients": len(rows),
                "train_examples": n_train,
                "test_examples": n_test,
                "round_seconds": now - round_start[0],
            }
        )
        round_start[0] = now
        log(
            INFO,
            "round %d: personal acc %.4f bacc %.4f | generic acc %.4f bacc %.4f | train loss %.4f",
            server_round,
            personal_acc,
            personal_bacc,
            gen.acc,
            gen.bacc,
            train_loss,
        )
        return MetricRecord({"generic-acc": gen.acc, "generic-bacc": gen.bacc, "personal-acc": personal_acc})

    t0 = time.time()
    strategy.start(
        grid=ordered,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=cfg.num_server_rounds,
        train_config=ConfigRecord({"method": method.name, "local-epochs": cfg.local_epochs}),
        evaluate_config=ConfigRecord({"method": method.name}),
        evaluate_fn=evaluate_fn,
    )
    recorder.timings["train_seconds"] = time.time() - t0
    recorder.write(finished=True)
    log(INFO, "fedetf results in %s\n%s", out_dir, format_summary(recorder.metrics))
    return recorder


__all__ = ["app", "main", "run"]
