"""fedetf ClientApp: one client round of the run's method; per-client state in ``context.state``."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedetf.methods import ClientRound, TrainSettings
from fedetf.train import client_diagnostics, client_round, evaluate
from simulations.config import parse_run_config
from simulations.faults import fault_injection_mod
from simulations.task import device, federation, make_method, model_buffer, round_seed

app = ClientApp(mods=[fault_injection_mod])

#: The key of the method's per-client state in ``context.state`` (an ArrayRecord of named tensors).
STATE_KEY = "fedetf.method-state"
#: Records the server and client exchange for checkpoints: the client's state (reply), its restore (resume).
STATE_REPLY, STATE_RESTORE = "fedetf.client-state", "fedetf.restore-state"
_PRIVATE = ("arrays", STATE_RESTORE)


def _state(msg: Message, context: Context) -> dict[str, torch.Tensor]:
    """The client's own state; after a resume, the checkpointed one the server sends back once."""
    record = context.state.get(STATE_KEY)
    if not isinstance(record, ArrayRecord) and STATE_RESTORE in msg.content:
        record = msg.content[STATE_RESTORE]
    return dict(record.to_torch_state_dict()) if isinstance(record, ArrayRecord) else {}


def _received(msg: Message) -> dict[str, dict[str, torch.Tensor]]:
    """The server's broadcast records: every ArrayRecord but the global weights and a state restore."""
    return {k: r.to_torch_state_dict() for k, r in msg.content.array_records.items() if k not in _PRIVATE}


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Handshake: report this node's partition id and the number of partitions."""
    node = ConfigRecord({k: int(context.node_config[k]) for k in ("partition-id", "num-partitions")})
    return Message(content=RecordDict({"node": node}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Evaluate the received model (personal view), train locally, evaluate the personal model."""
    cfg = parse_run_config(context.run_config)
    pid = int(context.node_config["partition-id"])
    config = dict(msg.content["config"])
    server_round = int(config["server-round"])
    seed = round_seed(cfg.seed, server_round, pid)
    torch.manual_seed(seed)
    fed = federation(cfg)
    method = make_method(cfg)
    model, initial = model_buffer(method)
    train_loader, test_loader = fed.client_loaders(pid, cfg.batch_size, seed, cfg.drop_last, cfg.num_workers)
    rnd = ClientRound(
        label_counts=torch.from_numpy(fed.label_counts(pid)),
        state=_state(msg, context),
        received=_received(msg),
        config=config,
        server_round=server_round,
    )
    settings = TrainSettings(cfg.local_epochs, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.clip_grad_norm)
    shared = msg.content["arrays"].to_torch_state_dict()
    dev = device(cfg)
    diagnose = None
    if cfg.diagnostics:
        probe = fed.probe_loader(seed=cfg.seed)
        diagnose = lambda m: client_diagnostics(m, probe, rnd.label_counts, dev)  # noqa: E731
    res = client_round(method, model, initial, shared, rnd, train_loader, test_loader, settings, dev, diagnose)
    if res.state:
        context.state[STATE_KEY] = ArrayRecord(res.state)
    metrics = MetricRecord(
        {
            "num-examples": len(train_loader.dataset),
            "num-batches": res.steps // max(1, cfg.local_epochs),
            "train-loss": res.train_loss,
            "personal-acc": res.after.acc,
            "personal-bacc": res.after.bacc,
            "personal-correct": res.after.num_correct,
            "personal-acc-before": res.before.acc,
            "personal-bacc-before": res.before.bacc,
            "personal-correct-before": res.before.num_correct,
            "test-examples": res.after.num_examples,
            "partition-id": pid,
            **{k.replace("_", "-"): v for k, v in res.diagnostics.items()},
        }
    )
    content = RecordDict({"arrays": ArrayRecord(res.shared), "metrics": metrics})
    if config.get("send-state") and res.state:  # the server checkpoints per-client states
        content[STATE_REPLY] = ArrayRecord(res.state)
    for name, tensors in res.extras.items():
        content[name] = ArrayRecord({k: v.detach().cpu() for k, v in tensors.items()})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Evaluate the received model with this client's personal state and adaptation on its test split."""
    cfg = parse_run_config(context.run_config)
    pid = int(context.node_config["partition-id"])
    fed = federation(cfg)
    method = make_method(cfg)
    model, initial = model_buffer(method)
    _, test_loader = fed.client_loaders(pid, cfg.batch_size, cfg.seed, num_workers=cfg.num_workers)
    rnd = ClientRound(
        label_counts=torch.from_numpy(fed.label_counts(pid)),
        state=_state(msg, context),
        received=_received(msg),
        config=dict(msg.content["config"]),
    )
    method.load(model, msg.content["arrays"].to_torch_state_dict(), initial, rnd.state, rnd.received)
    dev = device(cfg)
    model.to(dev)
    method.begin(model, rnd)
    res = evaluate(model, test_loader, personal=True, device=dev)
    metrics = MetricRecord({"num-examples": res.num_examples, "personal-acc": res.acc, "personal-bacc": res.bacc})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
