"""What the ServerApp and the ClientApp exchange, defined once: record keys, the client's metrics, error replies.

A train message carries Flower's ``arrays`` and ``config`` (FedAvg's record keys),
the strategy's broadcast records, and once after a resume :data:`RESTORE_STATE`.
When SuperNodes serve many clients in turn, each message also names its client
(:data:`CLIENT`) and carries that client's stored state (:data:`RESTORE_STATE`).
A train reply carries ``arrays``, ``metrics`` (a :class:`ClientMetrics` record), a
method's extra records, and :data:`CLIENT_STATE` when the server keeps checkpoints.
A client that fails on its own (divergence, bad data) replies with an error whose
reason is one line (:func:`error_reply`).

Flower is imported where a record or message is built, so that reading results
(:mod:`simulations.results`) stays light for the experiment tools.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import Field, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flwr.app import Message, MetricRecord

#: Flower's record keys in messages built by FedAvg-family strategies.
ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"
#: A train reply's ArrayRecord with the client's own state (for the server's checkpoint).
CLIENT_STATE = "fedetf.client-state"
#: A train message's ArrayRecord with a client's checkpointed state, sent after a resume until the client has it.
RESTORE_STATE = "fedetf.restore-state"
#: The train-config flag that asks clients to reply with :data:`CLIENT_STATE`.
SEND_STATE = "send-state"
#: The handshake reply's ConfigRecord: the node's ``partition-id`` and ``num-partitions``.
NODE = "node"
#: A multiplexed message's ConfigRecord naming the client (``partition-id``) the node is to serve for it.
CLIENT = "fedetf.client"


def _diagnostic() -> Any:
    return field(default=math.nan, metadata={"diagnostic": True})


@dataclass(frozen=True)
class ClientMetrics:
    """One client's train round: the MetricRecord of its reply and, with the round, its row of ``clients.csv``.

    Record keys are the field names in kebab-case, except ``train_examples``, which is
    Flower's weighting key ``num-examples``. The diagnostics (``diagnostics=true``) are
    NaN when not computed and then left out of the record.
    """

    partition_id: int
    personal_acc: float
    personal_bacc: float
    personal_acc_before: float
    personal_bacc_before: float
    train_loss: float
    train_examples: int = field(metadata={"record": "num-examples"})
    test_examples: int
    num_batches: int
    personal_correct: int
    personal_correct_before: int
    #: Local epochs done: fewer than ``local-epochs`` for a straggler whose partial work is sent.
    local_epochs: int
    angle_missing: float = _diagnostic()
    angle_present: float = _diagnostic()
    space_missing_share: float = _diagnostic()

    @staticmethod
    def record_key(f: Field) -> str:
        """The field's key in the MetricRecord."""
        return f.metadata.get("record", f.name.replace("_", "-"))

    @classmethod
    def diagnostic_columns(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.metadata.get("diagnostic")]

    @classmethod
    def columns(cls, diagnostics: bool = False) -> list[str]:
        """The ``clients.csv`` columns: the round, then the fields (the diagnostics only when computed)."""
        return ["round", *(f.name for f in fields(cls) if diagnostics or not f.metadata.get("diagnostic"))]

    def to_record(self) -> MetricRecord:
        from flwr.app import MetricRecord

        return MetricRecord(
            {
                self.record_key(f): getattr(self, f.name)
                for f in fields(self)
                if not (f.metadata.get("diagnostic") and math.isnan(getattr(self, f.name)))
            }
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ClientMetrics:
        """The metrics a client sent (a missing diagnostic is NaN; any other missing key raises KeyError)."""
        types = typing.get_type_hints(cls)
        return cls(
            **{
                f.name: types[f.name](record[cls.record_key(f)])
                for f in fields(cls)
                if cls.record_key(f) in record or not f.metadata.get("diagnostic")
            }
        )

    def row(self, server_round: int) -> dict[str, Any]:
        """The ``clients.csv`` row of this client in ``server_round``."""
        return {"round": server_round, **asdict(self)}


@dataclass(frozen=True)
class ClientEvaluation:
    """One client's evaluation (``evaluate-every``): the MetricRecord of its evaluate reply and its row of
    ``evaluations.csv``. ``personal_acc`` is on its own test split (``personal-test=local``; ``personal_correct``
    of ``test_examples``) or the global test set reweighted by its training label shares (``reweighted``;
    ``personal_correct`` is then -1). ``unseen`` marks a held-out client that never trained."""

    partition_id: int
    unseen: int
    personal_acc: float
    personal_bacc: float
    personal_correct: int
    test_examples: int = field(metadata={"record": "num-examples"})
    train_examples: int
    #: The weighting key of ``aggregation-weight=batches`` (Flower's aggregate_evaluate reads the run's key).
    num_batches: int

    def to_record(self) -> MetricRecord:
        from flwr.app import MetricRecord

        return MetricRecord({ClientMetrics.record_key(f): getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ClientEvaluation:
        types = typing.get_type_hints(cls)
        return cls(**{f.name: types[f.name](record[ClientMetrics.record_key(f)]) for f in fields(cls)})

    @classmethod
    def columns(cls) -> list[str]:
        """The ``evaluations.csv`` columns: the round, then the fields."""
        return ["round", *(f.name for f in fields(cls))]

    def row(self, server_round: int) -> dict[str, Any]:
        return {"round": server_round, **asdict(self)}


#: The reasons of the replies of clients that dropped out or whose partial work was dropped (not failures).
DROPOUT, STRAGGLER_DROPPED = "dropped out (dropout-rate)", "straggler dropped (straggler-rate)"


def with_records(msg: Message, records: Mapping[str, Any], dst_node_id: int | None = None) -> Message:
    """``msg`` with ``records`` added to a content of its own (a strategy's messages share one content), to
    ``dst_node_id`` (default: its own destination); its type and group stay."""
    from flwr.app import Message, RecordDict

    return Message(
        content=RecordDict({**dict(msg.content.items()), **records}),
        dst_node_id=msg.metadata.dst_node_id if dst_node_id is None else dst_node_id,
        message_type=msg.metadata.message_type,
        group_id=msg.metadata.group_id,
    )


def error_reply(msg: Message, exc: BaseException) -> Message:
    """A reply to ``msg`` that carries the client's failure as a one-line reason (no traceback is logged)."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode

    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)


def error_reason(reply: Message) -> str:
    """The one-line reason of an error reply: ours as sent, or the exception text Flower wraps when a client raises."""
    text = (reply.error.reason or "").strip()
    if not text:
        return f"unknown error (code {reply.error.code})"
    # Flower's wrapping: "<class '...ClientAppException'>:<'\nException ...\n\nMessage: <text>'>"
    return text.splitlines()[-1].split("Message: ", 1)[-1].rstrip("'>").strip() or text.splitlines()[0]
