import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from strategies.fedgela import FedGELA


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Messages need a task identity, as inside a running ServerApp."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1


class FakeGrid:
    def __init__(self, n: int) -> None:
        self.nodes = list(range(1, n + 1))

    def get_node_ids(self) -> list[int]:
        return self.nodes


def _reply(node: int, arrays: dict[str, np.ndarray], n: int) -> Message:
    request = Message(content=RecordDict({}), dst_node_id=node, message_type="train")
    content = RecordDict(
        {"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}), "metrics": MetricRecord({"num-examples": n})}
    )
    return Message(content=content, reply_to=request)


def test_fedgela_averages_everything_but_the_etf() -> None:
    etf = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    glob = ArrayRecord({"w": Array(np.zeros(2, np.float32)), "classifier.etf": Array(etf)})
    strategy = FedGELA(min_available_nodes=2)
    list(strategy.configure_train(1, glob, ConfigRecord(), FakeGrid(2)))
    replies = [
        _reply(1, {"w": np.array([1.0, 2.0], np.float32), "classifier.etf": etf.copy()}, 10),
        _reply(2, {"w": np.array([4.0, 8.0], np.float32), "classifier.etf": etf.copy()}, 30),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert list(arrays.keys()) == ["w", "classifier.etf"]
    np.testing.assert_allclose(arrays["w"].numpy(), [3.25, 6.5])
    assert np.array_equal(arrays["classifier.etf"].numpy(), etf)


def test_fedgela_refuses_a_changed_etf() -> None:
    etf = np.eye(3, dtype=np.float32)
    strategy = FedGELA(min_available_nodes=1, min_train_nodes=1)
    list(strategy.configure_train(1, ArrayRecord({"classifier.etf": Array(etf)}), ConfigRecord(), FakeGrid(1)))
    with pytest.raises(ValueError, match="changed the fixed array"):
        strategy.aggregate_train(1, [_reply(1, {"classifier.etf": etf + 1e-6}, 5)])
