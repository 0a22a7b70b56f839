"""fedetf ClientApp: local training with the run's method, personal evaluation."""

from __future__ import annotations

from functools import lru_cache

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedetf.methods import LocalMethod
from fedetf.train import TrainSettings, evaluate, train_local
from simulations.config import RunConfig, parse_run_config
from simulations.task import device, federation, local_method, round_seed

app = ClientApp()


@lru_cache(maxsize=4)
def _model(method: LocalMethod) -> torch.nn.Module:
    """One model per method and worker process; every round overwrites its whole state."""
    return method.build_model()


def _setup(msg: Message, context: Context) -> tuple[RunConfig, int, LocalMethod, torch.nn.Module, torch.device]:
    cfg = parse_run_config(context.run_config)
    pid = int(context.node_config["partition-id"])
    method = local_method(cfg, str(msg.content["config"]["method"]))
    model = _model(method)
    method.load_global(model, msg.content["arrays"].to_torch_state_dict())
    method.prepare(model, torch.from_numpy(federation(cfg).label_counts(pid)))
    return cfg, pid, method, model, device(cfg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Handshake: report this node's partition id and the number of partitions."""
    node = ConfigRecord({k: int(context.node_config[k]) for k in ("partition-id", "num-partitions")})
    return Message(content=RecordDict({"node": node}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train locally, then evaluate the locally adapted model on the local test split."""
    cfg, pid, method, model, dev = _setup(msg, context)
    server_round = int(msg.content["config"]["server-round"])
    seed = round_seed(cfg.seed, server_round, pid)
    torch.manual_seed(seed)
    train_loader, test_loader = federation(cfg).client_loaders(
        pid, cfg.batch_size, seed, cfg.drop_last, cfg.num_workers
    )
    settings = TrainSettings(cfg.local_epochs, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.clip_grad_norm)
    loss, steps = train_local(model, method, train_loader, settings, dev)
    personal = evaluate(model, test_loader, personal=True, device=dev)
    n_train = len(train_loader.dataset)
    metrics = MetricRecord(
        {
            "num-examples": n_train,
            "num-batches": steps // cfg.local_epochs,
            "train-loss": loss,
            "personal-acc": personal.acc,
            "personal-bacc": personal.bacc,
            "personal-correct": personal.num_correct,
            "test-examples": personal.num_examples,
            "partition-id": pid,
        }
    )
    arrays = ArrayRecord(model.cpu().state_dict())
    return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Evaluate the received model, locally adapted, on the local test split."""
    cfg, pid, _, model, dev = _setup(msg, context)
    _, test_loader = federation(cfg).client_loaders(pid, cfg.batch_size, cfg.seed, num_workers=cfg.num_workers)
    res = evaluate(model, test_loader, personal=True, device=dev)
    metrics = MetricRecord({"num-examples": res.num_examples, "personal-acc": res.acc, "personal-bacc": res.bacc})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
