"""Grids: partition order for reproducible sampling, clients multiplexed over few nodes, and nodes that live
in this process.

Simulated node ids are random per run. After one handshake that asks each
node for its partition id, :class:`PartitionOrderedGrid` lists nodes in
partition order (so a seeded ``random.sample`` in any strategy picks the same
partitions every run) and returns replies in partition order (so float sums in
aggregation happen in the same order). It changes no message.

:class:`MultiplexGrid` serves ``num-clients`` virtual clients from fewer
nodes: a strategy sees one node id per client and samples among them; each
message goes, naming its client (:data:`~simulations.contracts.CLIENT`), to
one of the real nodes in turn, and its reply comes back from the client's id.

:class:`InProcessGrid` hands each message straight to a ClientApp in this
process, one Context per node: the whole round loop without Ray (tests).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from simulations.contracts import CLIENT, NODE, with_records


class PartitionOrderedGrid(Grid):
    """Delegates to ``inner``; orders nodes and replies by partition id."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner
        self.partition_of: dict[int, int] = {}
        self.num_partitions: set[int] = set()

    def wait_for_nodes(
        self,
        expected: int,
        settle: float = 3.0,
        timeout: float = 120.0,
        poll: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> list[int]:
        """Connected node ids, once ``expected`` are there, or the count has been steady and
        non-zero for ``settle`` seconds, or ``timeout`` has passed (nodes register
        asynchronously: a ServerApp can start before any SuperNode is known).

        ``clock`` (seconds) and ``sleep`` are injectable so that tests need not wait. A grid whose nodes all
        exist from the start says so with ``settle_seconds = 0``.
        """
        settle = getattr(self.inner, "settle_seconds", settle)
        start = clock()
        last, since = -1, start
        while True:
            nodes = list(self.inner.get_node_ids())
            now = clock()
            if len(nodes) != last:
                last, since = len(nodes), now
            if len(nodes) >= expected or (nodes and now - since >= settle) or now - start >= timeout:
                return nodes
            sleep(poll)

    def handshake(self, expected: int, timeout: float = 600.0, chunk: int = 256) -> dict[int, int]:
        """Wait for ``expected`` nodes (see :meth:`wait_for_nodes`), ask each for
        (partition-id, num-partitions); return node -> partition.

        The queries go out ``chunk`` at a time: Flower's in-memory Grid rescans every
        pending message id on each 0.1 s poll, so one call with N messages costs O(N^2)
        (76 s for 10,000 nodes); chunks keep it linear in N.
        """
        nodes = self.wait_for_nodes(expected)
        deadline = time.monotonic() + timeout  # for the whole handshake, not per chunk
        replies: list[Message] = []
        step = max(1, chunk)
        for start in range(0, len(nodes), step):
            msgs = [
                Message(content=RecordDict({"config": ConfigRecord({})}), dst_node_id=n, message_type=MessageType.QUERY)
                for n in nodes[start : start + step]
            ]
            replies += self.inner.send_and_receive(msgs, timeout=max(0.0, deadline - time.monotonic()))
        errors = [r.error.reason for r in replies if r.has_error()]
        if errors or len(replies) != len(nodes):
            raise RuntimeError(f"handshake failed ({len(replies)}/{len(nodes)} replies): {errors[:1]}")
        self.partition_of = {r.metadata.src_node_id: int(r.content[NODE]["partition-id"]) for r in replies}
        self.num_partitions = {int(r.content[NODE]["num-partitions"]) for r in replies}
        return self.partition_of

    def without(self, partitions: frozenset[int]) -> PartitionOrderedGrid:
        """This grid as a strategy should see it when ``partitions`` must never be sampled (held-out clients):
        the same nodes and messages, minus those partitions' nodes in :meth:`get_node_ids`."""
        if not partitions:
            return self
        return _Without(self, partitions)

    def _order(self, node_id: int) -> tuple[int, int]:
        return (self.partition_of.get(node_id, 1 << 62), node_id)

    # Grid API --------------------------------------------------------------
    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(self, *args, **kwargs) -> Message:  # type: ignore[no-untyped-def]
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self.inner.get_node_ids(), key=self._order)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = self.inner.send_and_receive(messages, timeout=timeout)
        return sorted(replies, key=lambda m: self._order(m.metadata.src_node_id))


class _Without(PartitionOrderedGrid):
    def __init__(self, inner: PartitionOrderedGrid, excluded: frozenset[int]) -> None:
        super().__init__(inner)
        self.excluded = excluded
        self.partition_of, self.num_partitions = inner.partition_of, inner.num_partitions

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.inner.get_node_ids() if self.inner.partition_of.get(n) not in self.excluded]


class MultiplexGrid(PartitionOrderedGrid):
    """``num_clients`` virtual clients over the real ``nodes`` of ``inner`` (fewer of them).

    Client ``p`` is the node id ``VIRTUAL + p`` to the strategy. A round's messages go to the real nodes in
    turn (message ``i`` of a batch to node ``i mod len(nodes)``), each with a content of its own that adds
    the client's id; the strategy's messages are not changed. Which node serves a client does not matter:
    its data come from its partition id, its seeds from (seed, round, client), its state with the message.
    """

    VIRTUAL = 1 << 40

    def __init__(self, inner: Grid, nodes: list[int], num_clients: int) -> None:
        super().__init__(inner)
        self.nodes = sorted(nodes)
        self.partition_of = {self.VIRTUAL + p: p for p in range(num_clients)}
        self.num_partitions = {num_clients}

    def get_node_ids(self) -> Iterable[int]:
        return list(self.partition_of)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        sent: list[tuple[Message, int]] = []
        for i, msg in enumerate(messages):
            virtual = msg.metadata.dst_node_id
            client = ConfigRecord({"partition-id": self.partition_of[virtual]})
            sent.append((with_records(msg, {CLIENT: client}, self.nodes[i % len(self.nodes)]), virtual))
        replies = list(self.inner.send_and_receive([m for m, _ in sent], timeout=timeout))
        client_of = {m.metadata.message_id: virtual for m, virtual in sent}
        for reply in replies:
            reply.metadata.__dict__["_src_node_id"] = client_of[reply.metadata.reply_to_message_id]
        return sorted(replies, key=lambda m: self._order(m.metadata.src_node_id))


class InProcessGrid(Grid):
    """Nodes in this process: each message goes at once to ``client_app`` with that node's Context.

    Node ``1000 + p`` holds partition ``p``; its Context (and so its ``context.state``)
    lives as long as the grid, as in Flower's simulation engine.
    """

    #: Every node exists from the start: no need to wait for more (:meth:`PartitionOrderedGrid.wait_for_nodes`).
    settle_seconds = 0.0

    def __init__(self, client_app: ClientApp, run_config: dict[str, Any], num_nodes: int) -> None:
        self.app = client_app
        self._run = Run.create_empty(1)
        self.contexts = {
            1000 + p: Context(
                run_id=1,
                node_id=1000 + p,
                node_config={"partition-id": p, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for p in range(num_nodes)
        }
        self.replies: dict[str, Message] = {}

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(  # type: ignore[override]
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            mid = str(uuid.uuid4())
            msg.metadata.__dict__["_message_id"] = mid  # what the SuperLink assigns
            self.replies[mid] = self.app(msg, self.contexts[msg.metadata.dst_node_id])
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(m) for m in message_ids if m in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
