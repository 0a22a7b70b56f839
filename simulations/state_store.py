"""Where the clients' own states (SCAFFOLD's c_i, personal heads, MOON's previous model) live between rounds.

With one SuperNode per client, a client keeps its state in ``context.state``; the
server only sees it for checkpoints (:class:`NodeStates`). When SuperNodes serve
many clients in turn, the state follows the client, not the node: the server
keeps it in :class:`ClientStateStore`, an SQLite file beside the results, sends it
with each message to that client and stores what the reply brings back
(:class:`StoredStates`). At 100,000 clients this is on disk, not in memory.

Every row is versioned by the round that wrote it, and each round's rows are
written in one transaction. A checkpoint at round ``r`` needs no copy: it keeps,
per client, the newest row up to ``r``; resuming from it deletes the rows of
later rounds. A kill at any moment leaves either a round's rows or none.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from fedetf.methods.base import Tensors

#: The store's file in the run folder.
STORE_FILE = "client_states.sqlite"


def encode(state: Tensors) -> bytes:
    """Named tensors as an ``.npz`` (no pickled code)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: v.detach().cpu().numpy() for k, v in state.items()})
    return buf.getvalue()


def decode(blob: bytes) -> Tensors:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {k: torch.from_numpy(npz[k].copy()) for k in npz.files}


class ClientStateStore:
    """Per-client states in SQLite, versioned by round (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)  # explicit transactions below
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS states "
            "(client INTEGER, round INTEGER, tensors BLOB, PRIMARY KEY (client, round))"
        )

    def get(self, client: int) -> Tensors | None:
        """The client's newest state, or None if it has none."""
        row = self.db.execute(
            "SELECT tensors FROM states WHERE client = ? ORDER BY round DESC LIMIT 1", (client,)
        ).fetchone()
        return decode(row[0]) if row else None

    def put(self, server_round: int, states: dict[int, Tensors]) -> None:
        """Store the states the clients of ``server_round`` sent back, in one transaction."""
        if not states:
            return
        rows = [(client, server_round, encode(state)) for client, state in states.items()]
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO states VALUES (?, ?, ?)", rows)

    def checkpointed(self, server_round: int) -> None:
        """Drop the versions a checkpoint at ``server_round`` no longer needs (older than each client's newest up
        to that round)."""
        with self._transaction():
            self.db.execute(
                "DELETE FROM states WHERE round < (SELECT MAX(s.round) FROM states s "
                "WHERE s.client = states.client AND s.round <= ?)",
                (server_round,),
            )

    def rollback(self, server_round: int) -> None:
        """Back to the end of ``server_round``: delete what later rounds wrote (resuming from a checkpoint)."""
        with self._transaction():
            self.db.execute("DELETE FROM states WHERE round > ?", (server_round,))

    def all(self) -> dict[int, Tensors]:
        """Every client's newest state (for small federations only)."""
        rows = self.db.execute(
            "SELECT client, tensors FROM states s WHERE round = (SELECT MAX(round) FROM states WHERE client = s.client)"
        )
        return {int(client): decode(blob) for client, blob in rows}

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(DISTINCT client) FROM states").fetchone()[0])

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


class NodeStates:
    """One node per client: states live in the nodes; the server holds the latest ones for checkpoints, and after
    a resume sends each client its checkpointed state until the client has replied once."""

    stored = False

    def __init__(self, checkpointed: dict[int, Tensors]) -> None:
        self.latest = dict(checkpointed)
        self.restore = dict(checkpointed)

    def to_send(self, client: int) -> Tensors | None:
        return self.restore.get(client)

    def update(self, server_round: int, states: dict[int, Tensors], replied: set[int]) -> None:
        self.latest.update(states)
        self.restore = {p: s for p, s in self.restore.items() if p not in replied}

    def for_checkpoint(self, server_round: int) -> dict[int, Tensors]:
        return self.latest

    def close(self) -> None:
        pass


class StoredStates:
    """Clients multiplexed over fewer nodes: every message to a client carries its stored state, every reply's
    state is stored (:class:`ClientStateStore`); a checkpoint only marks the round in the store."""

    stored = True

    def __init__(
        self, store: ClientStateStore, done: int, checkpointed: dict[int, Tensors], keep_versions: bool = True
    ) -> None:
        self.store, self.keep_versions = store, keep_versions
        store.rollback(done)
        store.put(done, checkpointed)  # a checkpoint written with one node per client, resumed multiplexed

    def to_send(self, client: int) -> Tensors | None:
        return self.store.get(client)

    def update(self, server_round: int, states: dict[int, Tensors], replied: set[int]) -> None:
        self.store.put(server_round, states)
        if not self.keep_versions:  # no checkpoints to resume from: only the newest state is ever needed
            self.store.checkpointed(server_round)

    def for_checkpoint(self, server_round: int) -> dict[int, Tensors]:
        self.store.checkpointed(server_round)
        return {}

    def close(self) -> None:
        self.store.close()
