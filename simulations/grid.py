"""A Grid wrapper that makes any strategy reproducible and observable.

Simulated node ids are random per run. After one handshake that asks each
node for its partition id, :class:`PartitionOrderedGrid` lists nodes in
partition order (so a seeded ``random.sample`` in any strategy picks the same
partitions every run), returns replies in partition order (so float sums in
aggregation happen in the same order), and hands every train reply to a
callback (per-client metrics for ``clients.csv``), whatever the strategy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid


class PartitionOrderedGrid(Grid):
    """Delegates to ``inner``; orders nodes and replies by partition id."""

    def __init__(self, inner: Grid, on_train_replies: Callable[[list[Message]], None] | None = None) -> None:
        self.inner = inner
        self.on_train_replies = on_train_replies
        self.partition_of: dict[int, int] = {}
        self.num_partitions: set[int] = set()
        #: Per-partition records to add to that partition's next train message only (e.g. a state restore).
        self.private_records: dict[int, dict[str, Any]] = {}

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

        ``clock`` (seconds) and ``sleep`` are injectable so that tests need not wait.
        """
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
        self.partition_of = {r.metadata.src_node_id: int(r.content["node"]["partition-id"]) for r in replies}
        self.num_partitions = {int(r.content["node"]["num-partitions"]) for r in replies}
        return self.partition_of

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

    def _with_private_records(self, messages: list[Message]) -> list[Message]:
        """Give each node its pending private records, in a message of its own (strategies share one content)."""
        out = []
        for msg in messages:
            extra = self.private_records.pop(self.partition_of.get(msg.metadata.dst_node_id, -1), None)
            if extra:
                content = RecordDict({**dict(msg.content.items()), **extra})
                msg = Message(content=content, dst_node_id=msg.metadata.dst_node_id, message_type=MessageType.TRAIN)
            out.append(msg)
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if self.private_records and messages and messages[0].metadata.message_type == MessageType.TRAIN:
            messages = self._with_private_records(messages)
        replies = sorted(
            self.inner.send_and_receive(messages, timeout=timeout), key=lambda m: self._order(m.metadata.src_node_id)
        )
        if self.on_train_replies and messages and messages[0].metadata.message_type == MessageType.TRAIN:
            self.on_train_replies(replies)
        return replies
