"""fedetf ClientApp: one client round of the run's method.

A node is one client (its ``partition-id`` node config), whose state between
rounds lives in ``context.state``; or, when the SuperNodes are fewer than the
clients, each message names the client to serve, brings that client's state from
the server's store and takes the new state back (``simulations.state_store``).

A client's own failure (its training diverged, its data cannot be read) is
answered with an error reply carrying one line, not raised: the server counts
the client as failed and the log shows no traceback per client.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from torch.utils.data import DataLoader

from data_prep.datasets import DatasetError
from data_prep.federated import Federation
from fedetf.methods import ClientRound, LocalMethod, TrainSettings
from fedetf.metrics import reweighted_accuracy
from fedetf.models import FedModel
from fedetf.train import NonFiniteError, client_diagnostics, client_round, evaluate, predict, round_lr
from simulations.config import RunConfig, parse_run_config
from simulations.contracts import (
    ARRAYS,
    CLIENT,
    CLIENT_STATE,
    CONFIG,
    DROPOUT,
    METRICS,
    NODE,
    RESTORE_STATE,
    SEND_STATE,
    STRAGGLER_DROPPED,
    ClientEvaluation,
    ClientMetrics,
    error_reply,
)
from simulations.faults import fault_injection_mod
from simulations.task import (
    device,
    federation,
    holdout_partitions,
    make_method,
    model_buffer,
    round_seed,
    systems_draw,
)


def dp_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``fixedclipping_mod`` on the train messages of ``dp='client-fixed'`` (they carry the norm)."""
    config = msg.content.config_records.get(CONFIG)
    if msg.metadata.message_type == MessageType.TRAIN and config is not None and KEY_CLIPPING_NORM in config:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


app = ClientApp(mods=[fault_injection_mod, dp_clipping_mod])

#: The key of the method's per-client state in ``context.state`` (an ArrayRecord of named tensors).
STATE_KEY = "fedetf.method-state"
#: Failures that are the client's own; any other exception is a bug and keeps its traceback.
CLIENT_FAILURES: tuple[type[Exception], ...] = (NonFiniteError, DatasetError)

Handler = Callable[[Message, Context], Message]


def _fails_in_one_line(handler: Handler) -> Handler:
    """Answer :data:`CLIENT_FAILURES` with an error reply instead of raising."""

    @functools.wraps(handler)
    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except CLIENT_FAILURES as exc:
            return error_reply(msg, exc)

    return wrapped


def _client(msg: Message, context: Context) -> tuple[int, bool]:
    """The client this message is for, and whether the node serves many clients (its state then travels with
    the messages instead of living in ``context.state``)."""
    if CLIENT in msg.content:
        return int(msg.content[CLIENT]["partition-id"]), True
    return int(context.node_config["partition-id"]), False


def _state(msg: Message, context: Context, multiplexed: bool) -> dict[str, torch.Tensor]:
    """The client's own state: the one its message brings when multiplexed; else ``context.state``'s, or after
    a resume the checkpointed one the server sends until the client has it."""
    record = None if multiplexed else context.state.get(STATE_KEY)
    if not isinstance(record, ArrayRecord) and RESTORE_STATE in msg.content:
        record = msg.content[RESTORE_STATE]
    return dict(record.to_torch_state_dict()) if isinstance(record, ArrayRecord) else {}


def _received(msg: Message) -> dict[str, dict[str, torch.Tensor]]:
    """The server's broadcast records: every ArrayRecord but the global weights and a state restore."""
    return {
        k: r.to_torch_state_dict() for k, r in msg.content.array_records.items() if k not in (ARRAYS, RESTORE_STATE)
    }


@dataclass
class _ClientCall:
    """What a train or evaluate call of partition ``pid`` in ``server_round`` works with: its data, the method,
    the reused model buffer and its seeded initial state, and its :class:`ClientRound` (the client's state, the
    server's broadcast records and the round's config). Opening it seeds torch for (seed, round, client)."""

    fed: Federation
    method: LocalMethod
    model: FedModel
    initial: dict[str, torch.Tensor]
    train_loader: DataLoader
    test_loader: DataLoader
    dev: torch.device
    rnd: ClientRound

    @classmethod
    def open(
        cls,
        msg: Message,
        context: Context,
        cfg: RunConfig,
        pid: int,
        server_round: int,
        method: LocalMethod,
        multiplexed: bool = False,
    ) -> _ClientCall:
        seed = round_seed(cfg.seed, server_round, pid)
        torch.manual_seed(seed)
        fed = federation(cfg)
        model, initial = model_buffer(method)
        train_loader, test_loader = fed.client_loaders(pid, cfg.batch_size, seed, cfg.drop_last, cfg.num_workers)
        dev = device(cfg)
        rnd = ClientRound(
            label_counts=torch.from_numpy(fed.label_counts(pid)),
            state=_state(msg, context, multiplexed),
            received=_received(msg),
            config=dict(msg.content[CONFIG]),
            server_round=server_round,
            num_rounds=cfg.num_server_rounds,
            train_loader=train_loader,
            device=dev,
        )
        return cls(fed, method, model, initial, train_loader, test_loader, dev, rnd)


def train_settings(cfg: RunConfig, server_round: int) -> TrainSettings:
    """The shared local optimisation settings of ``server_round`` (its scheduled lr)."""
    lr = round_lr(cfg.lr, cfg.lr_schedule, cfg.lr_decay, server_round, cfg.num_server_rounds)
    return TrainSettings(cfg.local_epochs, lr, cfg.momentum, cfg.weight_decay, cfg.clip_grad_norm, cfg.optimizer)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Handshake: report this node's partition id and the number of partitions."""
    node = ConfigRecord({k: int(context.node_config[k]) for k in ("partition-id", "num-partitions")})
    return Message(content=RecordDict({NODE: node}), reply_to=msg)


@app.train()
@_fails_in_one_line
def train(msg: Message, context: Context) -> Message:
    """Evaluate the received model (personal view), train locally, evaluate the personal model."""
    cfg = parse_run_config(context.run_config)
    pid, multiplexed = _client(msg, context)
    server_round = int(msg.content[CONFIG]["server-round"])
    gone, epochs = systems_draw(cfg, server_round, pid)  # before any work: an absent client does none
    if gone:
        return error_reply(msg, RuntimeError(DROPOUT))
    method = make_method(cfg)
    if epochs < cfg.local_epochs and not method.keeps_partial_work:
        return error_reply(msg, RuntimeError(STRAGGLER_DROPPED))
    call = _ClientCall.open(msg, context, cfg, pid, server_round, method, multiplexed)
    fed, rnd, train_loader = call.fed, call.rnd, call.train_loader
    settings = replace(train_settings(cfg, server_round), epochs=epochs)
    shared = msg.content[ARRAYS].to_torch_state_dict()
    dev = call.dev
    diagnose = None
    if cfg.diagnostics:
        probe = fed.probe_loader(seed=cfg.seed)
        diagnose = lambda m: client_diagnostics(m, probe, rnd.label_counts, dev)  # noqa: E731
    res = client_round(
        method, call.model, call.initial, shared, rnd, train_loader, call.test_loader, settings, dev, diagnose
    )
    if res.state and not multiplexed:
        context.state[STATE_KEY] = ArrayRecord(res.state)
    metrics = ClientMetrics(
        partition_id=pid,
        personal_acc=res.after.acc,
        personal_bacc=res.after.bacc,
        personal_acc_before=res.before.acc,
        personal_bacc_before=res.before.bacc,
        train_loss=res.train_loss,
        train_examples=len(train_loader.dataset),
        test_examples=res.after.num_examples,
        num_batches=res.steps // max(1, epochs),
        personal_correct=res.after.num_correct,
        personal_correct_before=res.before.num_correct,
        local_epochs=epochs,
        **res.diagnostics,
    )
    content = RecordDict({ARRAYS: ArrayRecord(res.shared), METRICS: metrics.to_record()})
    if (rnd.config.get(SEND_STATE) or multiplexed) and res.state:  # the server checkpoints or stores it
        content[CLIENT_STATE] = ArrayRecord(res.state)
    for name, tensors in res.extras.items():
        content[name] = ArrayRecord({k: v.detach().cpu() for k, v in tensors.items()})
    return Message(content=content, reply_to=msg)


@app.evaluate()
@_fails_in_one_line
def evaluate_local(msg: Message, context: Context) -> Message:
    """Evaluate this client's personal model: the received model with the client's own state, adaptation and
    personalisation step, or for a held-out client what the method allows without federated training
    (:meth:`~fedetf.methods.LocalMethod.adapt_unseen`); on its own test split or, with
    ``personal-test=reweighted``, on the global test set weighted by its training label shares."""
    cfg = parse_run_config(context.run_config)
    pid, multiplexed = _client(msg, context)
    server_round = int(msg.content[CONFIG].get("server-round", 0))
    call = _ClientCall.open(msg, context, cfg, pid, server_round, make_method(cfg), multiplexed)
    fed, method, model, rnd, dev = call.fed, call.method, call.model, call.rnd, call.dev
    train_loader, test_loader = call.train_loader, call.test_loader
    settings = train_settings(cfg, server_round)
    method.load(model, msg.content[ARRAYS].to_torch_state_dict(), call.initial, rnd.state, rnd.received)
    model.to(dev)
    method.begin(model, rnd)
    unseen = pid in holdout_partitions(cfg)
    if unseen:
        personal = method.adapt_unseen(model, train_loader, settings, dev)
    else:
        personal = method.personalize(method.before_view(model, rnd), train_loader, settings, dev)
    if cfg.personal_test == "reweighted":
        y, p, _ = predict(personal, fed.global_test_loader(cfg.num_workers), True, dev)
        acc = reweighted_accuracy(y, p, fed.label_counts(pid))
        bacc, correct, n_test = acc, -1, len(y)
    else:
        res = evaluate(personal, test_loader, personal=True, device=dev)
        acc, bacc, correct, n_test = res.acc, res.bacc, res.num_correct, res.num_examples
    metrics = ClientEvaluation(
        partition_id=pid,
        unseen=int(unseen),
        personal_acc=acc,
        personal_bacc=bacc,
        personal_correct=correct,
        test_examples=n_test,
        train_examples=len(train_loader.dataset),
        num_batches=len(train_loader),
    )
    return Message(content=RecordDict({METRICS: metrics.to_record()}), reply_to=msg)
