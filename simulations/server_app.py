"""fedetf ServerApp: check the run, connect to the nodes, open the results, run the round loop.

Whatever stops a run ends in one ERROR line and ``SystemExit``: status 2 when
it cannot start (nothing is written), status 1 when training stopped
(``run.json`` then says ``failed``, with the same line). Tracebacks of
unforeseen errors go to the DEBUG log.
"""

from __future__ import annotations

import inspect
import random
import threading
import time
import traceback
import typing
from dataclasses import dataclass
from logging import DEBUG, ERROR, INFO, WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy
from pydantic import ConfigDict, TypeAdapter, ValidationError

from fedetf.methods import LocalMethod
from simulations import checkpoint
from simulations.config import ConfigError, RunConfig, parse_run_config
from simulations.grid import MultiplexGrid, PartitionOrderedGrid
from simulations.partition_plot import PARTITION_FILE, write_partition_png
from simulations.results import (
    RunInfo,
    RunInfoError,
    RunRecorder,
    check_output_dir,
    format_summary,
    fresh_output_dir,
)
from simulations.rounds import RoundFailed, Start, run_rounds
from simulations.task import device, federation, holdout_partitions, make_method, model_buffer
from simulations.tracking import open_tracking
from strategies.privacy import with_privacy
from strategies.registry import StrategyError, accepted_kwargs, build_strategy, server_class

app = ServerApp()


class SetupError(RuntimeError):
    """The run cannot start; the message is one line."""


#: Clients beyond which the all-client evaluation earns a warning (one message per client).
LARGE_EVALUATION = 1000

#: Errors whose message is the whole story (one line, nothing to locate).
EXPECTED = (ConfigError, StrategyError, SetupError, ValueError, RuntimeError, OSError)


@dataclass
class Setup:
    """A checked run: its config, method, strategy and, to continue a run, the checkpoint it resumes from."""

    cfg: RunConfig
    method: LocalMethod
    strategy: Strategy
    resume_from: dict[str, Any] | None = None


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one federated experiment end to end (see the module docstring for how it ends on failure)."""
    try:
        setup = prepare(context)
        nodes = connect(grid, setup.cfg)
        recorder, start = open_results(setup, multiplexed=isinstance(nodes, MultiplexGrid))
    except Exception as exc:
        log(ERROR, "%s", one_line(exc, EXPECTED, "cannot start the run", "nothing was trained"))
        raise SystemExit(2) from None
    cfg = setup.cfg
    began = time.time()
    drawing = threading.Thread(target=draw_partition, args=(cfg, recorder.out_dir), daemon=True)
    drawing.start()  # beside round 1: it imports flwr-datasets and reads every drawn client's labels
    try:
        run_rounds(nodes, cfg, setup.strategy, setup.method, recorder, start)
    except Exception as exc:
        reason = one_line(exc, (RoundFailed,), "training failed")
        drawing.join()
        recorder.write(status="failed", error=reason)
        log(ERROR, "the run stopped: %s; results so far in %s", reason, recorder.out_dir)
        raise SystemExit(1) from None
    recorder.timings["train_seconds"] = recorder.timings.get("train_seconds", 0.0) + time.time() - began
    drawing.join()
    recorder.write(status="finished")
    log(INFO, "fedetf results in %s\n%s", recorder.out_dir, format_summary(recorder.metrics))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def one_line(exc: BaseException, expected: tuple[type[BaseException], ...], what: str, then: str = "") -> str:
    """``exc`` as one line: its message if it is ``expected``, else its type, message and where it was raised
    (the traceback goes to the DEBUG log)."""
    reason = first_line(exc)
    if isinstance(exc, expected):
        return reason
    log(DEBUG, "%s", "".join(traceback.format_exception(exc)))
    where = traceback.extract_tb(exc.__traceback__)[-1]
    located = f"{what}: {type(exc).__name__}: {reason} (at {Path(where.filename).name}:{where.lineno or 0})"
    return f"{located}; {then}" if then else located


# -- before any node is contacted ---------------------------------------------------------------------------------


def prepare(context: Context) -> Setup:
    """Check everything that can be checked before any node is contacted: config, data, strategy, output folder,
    and the run to resume."""
    cfg = parse_run_config(context.run_config)
    device(cfg)
    federation(cfg)  # partition errors surface here, before training
    method = make_method(cfg)
    strategy = build_server(cfg, method)
    check_output_dir(cfg.output_dir, cfg.resume)
    return Setup(cfg, method, strategy, resume_point(cfg) if cfg.resume else None)


def build_server(cfg: RunConfig, method: LocalMethod) -> Strategy:
    """The run's strategy, with ``server-args`` checked against the constructor's names and type hints."""
    server = cfg.server if cfg.server != "auto" else type(method).server
    key = "server" if cfg.server != "auto" else f"{method.name}.server"
    try:
        cls = server_class(type(method), cfg.server)
    except StrategyError:
        raise
    except Exception as exc:  # a user module that raises while it is imported
        raise ConfigError(
            f"invalid run config: {key}={server!r}; allowed: an importable 'package.module:ClassName' "
            f"(importing it raised {type(exc).__name__}: {first_line(exc)})"
        ) from None
    accepted = accepted_kwargs(cls)
    if accepted is not None and (unknown := sorted(set(cfg.server_kwargs) - accepted)):
        raise ConfigError(
            f"invalid run config: server-args={cfg.server_args!r}; {cls.__name__} does not take {unknown}; "
            f"allowed: a JSON object of its arguments {sorted(accepted)}"
        )
    for name, value in cfg.server_kwargs.items():
        if (expected := wrong_type(cls, name, value)) is not None:
            raise ConfigError(
                f"invalid run config: server-args={cfg.server_args!r}; {cls.__name__} argument {name!r}={value!r}; "
                f"allowed: a value of type {expected}"
            )
    if cfg.dp != "none" and method.sends_records():
        raise ConfigError(
            f"invalid run config: dp={cfg.dp!r}; allowed: 'none' for method={method.name!r} (Flower's DP wrappers "
            "clip every record of a reply against the model, and this method sends others)"
        )
    n_train = cfg.num_clients - len(holdout_partitions(cfg))
    try:
        strategy = build_strategy(
            cls,
            num_clients=n_train,
            fraction_train=cfg.fraction_train,
            weighted_by_key="num-batches" if cfg.aggregation_weight == "batches" else "num-examples",
            extra=cfg.server_kwargs,
            method_kwargs=method.server_kwargs(),
        )
    except StrategyError:
        raise
    except Exception as exc:  # e.g. a server-args value the strategy refuses
        raise ConfigError(
            f"invalid run config: server={server!r} server-args={cfg.server_args!r}; building {cls.__name__} "
            f"raised {type(exc).__name__}: {first_line(exc)}"
        ) from None
    sampled = max(1, int(n_train * cfg.fraction_train))  # Flower's FedAvg samples int(n * fraction), at least 1
    try:
        return with_privacy(strategy, cfg.dp, cfg.dp_noise_multiplier, cfg.dp_clipping_norm, sampled)
    except ValueError as exc:  # e.g. adaptive clipping's noise bound for few clients per round
        raise ConfigError(
            f"invalid run config: dp={cfg.dp!r} dp-noise-multiplier={cfg.dp_noise_multiplier!r} with {sampled} "
            f"clients per round; Flower's DP wrapper refuses: {first_line(exc)}"
        ) from None


def wrong_type(cls: type, name: str, value: Any) -> str | None:
    """The type ``cls``'s constructor declares for ``name`` if ``value`` does not fit it, else None (also when
    the constructor declares none, or one that cannot be checked)."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or name not in inspect.signature(init).parameters:
            continue
        try:
            hint = typing.get_type_hints(init).get(name)
            adapter = TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
        except Exception:  # noqa: BLE001 - an unresolvable or unsupported hint: nothing to check against
            return None
        if hint is None:
            return None
        try:
            adapter.validate_python(value, strict=True)  # strict: no '0.1' -> 0.1; an int still fits a float
        except ValidationError:
            return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
        return None
    return None


def resume_point(cfg: RunConfig) -> dict[str, Any]:
    """The checkpoint of the unfinished run of the same config in ``cfg.output_dir``."""
    out = Path(cfg.output_dir)
    try:
        info = RunInfo.load(out)
    except RunInfoError as exc:
        raise SetupError(f"cannot resume: {exc}; allowed: resume=true on an interrupted run") from None
    if info.status == "finished":
        raise SetupError(f"cannot resume: the run in {out} finished; start a new one with another output-dir")
    payload = checkpoint.load(out)
    free = ("resume", "tracking", "tracking-uri")  # may change on resume: they do not change the results
    ours = {k: v for k, v in cfg.to_dict().items() if k not in free}
    theirs = {k: v for k, v in payload["config"].items() if k not in free}
    if ours != theirs:
        diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        shown = ", ".join(f"{k}={theirs.get(k)!r} (now {ours.get(k)!r})" for k in diff[:3])
        raise SetupError(f"cannot resume {out}: its config differs in {shown}; resume with the same config")
    if payload["round"] >= cfg.num_server_rounds:
        raise SetupError(f"cannot resume: the checkpoint in {out} is at the last round {payload['round']}")
    return payload


# -- nodes and results folder ------------------------------------------------------------------------------------


def connect(grid: Grid, cfg: RunConfig) -> PartitionOrderedGrid:
    """Wait for the federation. As many nodes as clients: learn each node's partition (in one handshake). Fewer:
    the nodes serve the clients in turn (:class:`MultiplexGrid`). More: refuse."""
    nodes = PartitionOrderedGrid(grid)
    found = nodes.wait_for_nodes(cfg.num_clients)
    if 0 < len(found) < cfg.num_clients:
        log(INFO, "%d clients served in turn by %d SuperNodes", cfg.num_clients, len(found))
        if cfg.evaluate_every and cfg.num_clients > LARGE_EVALUATION:
            log(
                WARNING,
                "evaluate-every=%d sends every one of the %d clients an evaluate message in those rounds and the "
                "last; evaluate-every=0 evaluates the global model only",
                cfg.evaluate_every,
                cfg.num_clients,
            )
        return MultiplexGrid(grid, found, cfg.num_clients)
    if len(found) == cfg.num_clients:
        nodes.handshake(expected=cfg.num_clients)
    if len(found) != cfg.num_clients or nodes.num_partitions != {cfg.num_clients}:
        raise SetupError(
            f"invalid run config: num-clients={cfg.num_clients} but the federation has {len(found)} supernodes; "
            f"allowed: num-clients at least num-supernodes, e.g. flwr run . --run-config 'num-clients={len(found)}' "
            f"or --federation-config 'num-supernodes={cfg.num_clients}'"
        )
    return nodes


def open_results(setup: Setup, multiplexed: bool = False) -> tuple[RunRecorder, Start]:
    """The run's recorder (a fresh output folder, or the resumed run's) and where the round loop starts
    (``multiplexed``: the clients' states are in the run's state store)."""
    cfg, method, strategy, payload = setup.cfg, setup.method, setup.strategy, setup.resume_from
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    config = {k: v for k, v in cfg.to_dict().items() if k != "resume"}
    if payload is None:
        _, initial = model_buffer(method)
        recorder = RunRecorder(fresh_output_dir(cfg.output_dir, cfg.method, cfg.dataset), config, cfg.diagnostics)
        start = Start(0, ArrayRecord(method.shared_state(initial)))  # not the model: a reused buffer
    else:
        done = int(payload["round"])
        recorder = RunRecorder.resume(Path(cfg.output_dir), config, cfg.diagnostics, done)
        checkpoint.restore_strategy(strategy, payload["strategy"])
        checkpoint.restore_random(payload)
        start = Start(
            done, checkpoint.global_arrays(payload), checkpoint.client_states(payload, recorder.out_dir, multiplexed)
        )
        log(INFO, "resuming %s after round %d", recorder.out_dir, done)
    recorder.about = describe(cfg, method, strategy)
    for note in recorder.about["notes"]:
        log(INFO, "note: %s", note)
    log(
        INFO,
        "fedetf: method %s, server %s, on %s/%s, %d clients; results -> %s",
        method.name,
        type(strategy).__name__,
        cfg.dataset,
        cfg.effective_partition,
        cfg.num_clients,
        recorder.out_dir,
    )
    recorder.write()
    recorder.tracking = open_tracking(cfg.tracking, cfg.tracking_uri, recorder.out_dir, config, recorder.about)
    return recorder, start


def draw_partition(cfg: RunConfig, out_dir: Path) -> None:
    """``partition.png`` in the run folder (kept when resuming); a failure is one WARNING, never fatal."""
    path = out_dir / PARTITION_FILE
    if path.exists():
        return
    try:
        write_partition_png(federation(cfg), path)
    except Exception as exc:  # noqa: BLE001 - a figure must never stop the run
        log(WARNING, "%s not drawn: %s: %s", PARTITION_FILE, type(exc).__name__, first_line(exc))


def describe(cfg: RunConfig, method: LocalMethod, strategy: Strategy) -> dict[str, Any]:
    """What ``run.json`` says about the run besides its results."""
    notes = []
    if cfg.natural:
        notes.append(
            f"dataset={cfg.dataset!r} has natural clients: partition, classes-per-client and dirichlet-beta are ignored"
        )
    if cfg.model_name == "efficientnet_b0" and not cfg.pretrained_weights:
        notes.append("efficientnet_b0 starts from scratch (no pretrained-weights file given)")
    if not getattr(method, "generic_model", True):
        notes.append(f"method {method.name!r} has no global model: the generic metrics are NaN")
    return {
        "notes": notes,
        "method": method.name,
        "method_settings": cfg.method_settings_dict(),
        "strategy_class": f"{type(strategy).__module__}:{type(strategy).__qualname__}",
        "personal_view": (
            "each client's personal model on its own test split (personal_acc: after local training; "
            "personal_acc_before: the received model with the client's own adaptation and state)"
            if method.personal_model
            else "no personal model: the personal view is the global model on each client's own test split "
            "(personal_acc_before); personal_acc is the locally trained model, before averaging"
        ),
    }


__all__ = ["app", "main"]
