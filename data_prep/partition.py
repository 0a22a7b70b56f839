"""Label-skew partitioners: PCDD (n classes per client), Dirichlet, IID.

Every partition is a pure function of (labels, scheme, parameters, seed) and
returns, per client, indices into the train split and into the test split.
Test splits follow the train split's label distribution:

* ``pcdd``: each client holds ``classes_per_client`` classes; each class's
  samples are split evenly (``np.array_split``) among its holders, train and
  test alike, so each client's test split holds only its train classes. The
  class assignment is either flwr-datasets' ``PathologicalPartitioner``'s
  (``"flwr"``: first class round-robin, the rest random, class samples in
  dataset order; its steps re-run in numpy, checked equal by a test) or the
  FedGELA authors' (``"sequential"``: the first K slots are classes 0..K-1 in
  order, the rest random; class samples shuffled), replayed with their random
  number generators so that a seed gives their split (checked by a test).
* ``dirichlet``: per class, one Dirichlet(beta) draw over clients splits both
  the train and the test samples of that class.
* ``dirichlet-per-client``: each client draws its own class mix from Dirichlet(beta)
  and takes an equal share of the samples with it (cross-device scale).
* ``iid``: a seeded permutation cut into the contiguous shards of flwr-datasets'
  ``IidPartitioner`` (``Dataset.shard(contiguous=True)``), on train and on test.

A partition that leaves a client without train samples raises a one-line
``ValueError``; a client may have an empty test split.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

Parts = list[tuple[np.ndarray, np.ndarray]]

#: Class assignments of ``pcdd``.
PCDD_ASSIGNMENTS = ("flwr", "sequential")


def _require_train_samples(parts: Parts, scheme: str, n_train: int) -> Parts:
    """Raise a one-line ``ValueError`` if any client has an empty train split."""
    for cid, (tr, _) in enumerate(parts):
        if len(tr) == 0:
            raise ValueError(
                f"num-clients={len(parts)}: partition {scheme!r} leaves client {cid} with no train samples "
                f"(the train split has {n_train} samples); lower num-clients"
            )
    return parts


def flwr_assignment(classes: np.ndarray, num_clients: int, classes_per_client: int, seed: int) -> list[list[int]]:
    """Classes of each client as flwr-datasets' ``PathologicalPartitioner`` ("first-deterministic") assigns them.

    Client ``p`` gets class ``classes[p % K]``, then draws from ``default_rng(seed)`` until it
    holds ``classes_per_client`` distinct classes: the partitioner's own steps, here so that
    workers need not import ``flwr_datasets``/``datasets`` (1.8 s and ~190 MB per process).
    A test checks that the indices equal the partitioner's.
    """
    labels = np.unique(classes)
    if not 1 <= classes_per_client <= len(labels):
        raise ValueError(f"classes-per-client={classes_per_client} must be between 1 and the {len(labels)} classes")
    rng = np.random.default_rng(seed)
    out: list[list[int]] = []
    for p in range(num_clients):
        held = [int(labels[p % len(labels)])]
        while len(held) < classes_per_client:
            c = int(rng.choice(labels, size=1)[0])
            if c not in held:
                held.append(c)
        out.append(sorted(held))
    return out


def sequential_assignment(classes: np.ndarray, num_clients: int, classes_per_client: int, seed: int) -> list[list[int]]:
    """Classes of each client, in slot order, as the FedGELA authors assign them.

    Replays ``partition_class_per`` in MediaBrain-SJTU/FedGELA (commit b5b20d5),
    ``partition_data.py`` lines 44-61, seeded as ``set_seed`` in ``FedGELA.py`` lines
    131-138 (``random.seed(seed)``): slot ``s = client * classes_per_client + j`` gets
    ``classes[s]`` while ``s < K``; afterwards ``random.randint(0, K - 1)`` is drawn from
    Python's ``random.Random(seed)`` until it names a class the client does not hold yet.
    Their class ids are ``0..K-1``; here draw ``r`` names ``classes[r]``.
    """
    k = len(classes)
    if not 1 <= classes_per_client <= k:
        raise ValueError(f"classes-per-client={classes_per_client} must be between 1 and the {k} classes")
    rng = random.Random(seed)
    out: list[list[int]] = []
    for cid in range(num_clients):
        held: list[int] = []
        for j in range(classes_per_client):
            slot = cid * classes_per_client + j
            if slot < k:
                held.append(int(classes[slot]))
                continue
            c = int(classes[rng.randint(0, k - 1)])
            while c in held:
                c = int(classes[rng.randint(0, k - 1)])
            held.append(c)
        out.append(held)
    return out


def split_among_holders(
    labels: np.ndarray, assignment: list[list[int]], rng: np.random.RandomState | None = None
) -> list[np.ndarray]:
    """Split each class's samples evenly (``np.array_split``) among its holders, in client order.

    Classes are visited in increasing order. With ``rng`` each class's samples are first shuffled
    in place by ``rng.shuffle`` (the legacy ``RandomState`` stream of ``np.random.shuffle``);
    without, they keep dataset order. A holder may get no sample of a class that has fewer
    samples than holders.
    """
    out: list[list[np.ndarray]] = [[np.zeros(0, np.int64)] for _ in assignment]
    for c in sorted({c for held in assignment for c in held}):
        holders = [cid for cid, held in enumerate(assignment) if c in held]
        idx = np.flatnonzero(labels == c)
        if rng is not None:
            rng.shuffle(idx)
        for cid, chunk in zip(holders, np.array_split(idx, len(holders)), strict=True):
            out[cid].append(chunk)
    return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in out]


def pcdd(
    y_train: np.ndarray,
    y_test: np.ndarray,
    num_clients: int,
    seed: int,
    classes_per_client: int,
    assignment: str = "flwr",
) -> Parts:
    """Each client holds ``classes_per_client`` classes, in train and test alike.

    ``assignment``: ``"flwr"`` (``PathologicalPartitioner``; same indices as running
    it on the train labels) or ``"sequential"``: the FedGELA authors' ``partition_class_per``
    (MediaBrain-SJTU/FedGELA at b5b20d5, ``partition_data.py`` lines 26-87), seeded as their
    ``set_seed`` (``FedGELA.py`` lines 131-138) seeds Python's ``random`` and numpy's legacy
    global generator with ``seed``: classes from :func:`sequential_assignment`, then each
    class's train samples shuffled by ``np.random.RandomState(seed)`` and split among its
    holders (lines 65-73), then each class's test samples with the same generator (lines
    75-83). With labels ``0..K-1`` the indices equal theirs. If the clients together hold fewer
    than the K classes (their code then fails), the unheld classes go unused.
    """
    classes = np.unique(y_train)
    if not 1 <= classes_per_client <= len(classes):
        raise ValueError(
            f"classes-per-client={classes_per_client} must be between 1 and the {len(classes)} classes of the "
            "train split"
        )
    if assignment == "flwr":
        held, rng = flwr_assignment(classes, num_clients, classes_per_client, seed), None
    elif assignment == "sequential":
        held = sequential_assignment(classes, num_clients, classes_per_client, seed)
        rng = np.random.RandomState(seed)  # legacy stream, as their np.random.shuffle
    else:
        raise ValueError(f"pcdd-assignment={assignment!r} is unknown; allowed: {list(PCDD_ASSIGNMENTS)}")
    for c in classes:
        holders = [cid for cid, h in enumerate(held) if c in h]
        n = int((y_train == c).sum())
        if len(holders) > n:
            raise ValueError(
                f"num-clients={num_clients}: partition 'pcdd' leaves client {holders[n]} without class {c} "
                f"(class {c} has {n} train samples for {len(holders)} holders); "
                "lower num-clients or classes-per-client"
            )
    train = split_among_holders(y_train, held, rng)
    test = split_among_holders(y_test, held, rng)
    return _require_train_samples(list(zip(train, test, strict=True)), "pcdd", len(y_train))


def iid(y_train: np.ndarray, y_test: np.ndarray, num_clients: int, seed: int) -> Parts:
    """Uniformly random, equal-size client splits: a seeded shuffle cut into contiguous shards.

    The shards are ``IidPartitioner``'s (``Dataset.shard(contiguous=True)``: the first
    ``n % num_clients`` shards one sample larger), computed by ``np.array_split`` in one call
    instead of one ``load_partition`` per client (9 s for 10,000 clients); a test checks
    they are equal. With fewer samples than clients some test shards are empty.
    """

    def split(labels: np.ndarray, s: int) -> list[np.ndarray]:
        perm = np.random.default_rng(s).permutation(len(labels))
        return [np.sort(p).astype(np.int64) for p in np.array_split(perm, num_clients)]

    parts = list(zip(split(y_train, seed), split(y_test, seed + 1), strict=True))
    return _require_train_samples(parts, "iid", len(y_train))


def dirichlet(
    y_train: np.ndarray,
    y_test: np.ndarray,
    num_clients: int,
    seed: int,
    beta: float,
    min_size: int = 10,
    max_tries: int = 100,
) -> Parts:
    """Per class c, ``p_c ~ Dir(beta)`` over clients splits train and test of c alike.

    The draw is repeated until every client holds at least ``min_size`` train
    samples (or ``len(y_train) // num_clients`` when that is smaller).
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(y_train)
    need = min(min_size, len(y_train) // num_clients)
    for _ in range(max_tries):
        props = rng.dirichlet(np.full(num_clients, beta), size=len(classes))
        train = _split_by_props(y_train, classes, props, rng)
        if min(len(t) for t in train) >= need:
            test = _split_by_props(y_test, classes, props, rng)
            return _require_train_samples(list(zip(train, test, strict=True)), "dirichlet", len(y_train))
    raise ValueError(
        f"dirichlet-beta={beta} with num-clients={num_clients}: no draw in {max_tries} gave every client "
        f">= {need} train samples; raise dirichlet-beta, lower num-clients, or use partition='dirichlet-per-client' "
        "(equal shares, any number of clients)"
    )


def _split_by_props(
    labels: np.ndarray, classes: np.ndarray, props: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per class c, its samples in a seeded order cut into consecutive shares ``props[c]`` (client i takes the
    i-th piece); each client's indices sorted. Vectorised: one owner per sample, grouped once."""
    num_clients = props.shape[1]
    owner = np.zeros(len(labels), dtype=np.int64)
    for c, p in zip(classes, props, strict=True):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(p)[:-1] * len(idx)).round().astype(int)
        owner[idx] = np.searchsorted(cuts, np.arange(len(idx)), side="right")  # np.split's pieces
    return group_by_owner(owner, num_clients)


def group_by_owner(owner: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Indices of each owner ``0..num_clients-1`` in ``owner``, ascending (int64): one stable argsort, not one
    scan per client. Owners outside that range are left out."""
    order = np.argsort(owner, kind="stable").astype(np.int64)  # stable: each client's indices stay increasing
    bounds = np.searchsorted(owner[order], np.arange(num_clients + 1), side="left")
    return [order[bounds[c] : bounds[c + 1]] for c in range(num_clients)]


def dirichlet_per_client(y_train: np.ndarray, y_test: np.ndarray, num_clients: int, seed: int, beta: float) -> Parts:
    """Each client draws its own class mix ``q ~ Dir(beta)`` and takes an equal share of the samples with it.

    The cross-device Dirichlet split (Hsu et al. 2019; pfl-research's
    ``partition_by_dirichlet_class_distribution``): client k gets ``len(y) // num_clients`` train samples (the
    first ``len(y) % num_clients`` clients one more), their classes drawn ~ Multinomial(q_k) over the classes
    that still have samples (a share a class cannot fill is drawn again from the others), without replacement
    from seeded class pools; its test split follows the same ``q_k``. Any number of clients up to the number of
    train samples works, and every client has data, where the per-class ``dirichlet`` cannot guarantee that at
    cross-device scale.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(y_train)
    mixes = rng.dirichlet(np.full(len(classes), beta), size=num_clients)
    train = _draw_by_mix(y_train, classes, mixes, rng)
    test = _draw_by_mix(y_test, classes, mixes, rng)
    return _require_train_samples(list(zip(train, test, strict=True)), "dirichlet-per-client", len(y_train))


def _draw_by_mix(labels: np.ndarray, classes: np.ndarray, mixes: np.ndarray, rng: np.random.Generator) -> list:
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    left = np.array([len(p) for p in pools])
    taken = np.zeros(len(classes), dtype=np.int64)
    base, extra = divmod(len(labels), len(mixes))
    out = []
    for k, mix in enumerate(mixes):
        need, counts = base + (k < extra), np.zeros(len(classes), dtype=np.int64)
        while need > 0 and left.sum() > 0:
            q = np.where(left > 0, mix, 0.0)
            q = q / q.sum() if q.sum() > 0 else (left > 0) / (left > 0).sum()
            draw = np.minimum(rng.multinomial(need, q), left)
            counts += draw
            left -= draw
            need -= int(draw.sum())
        out.append(np.sort(np.concatenate([pools[c][taken[c] : taken[c] + n] for c, n in enumerate(counts)])))
        taken += counts
    return [o.astype(np.int64) for o in out]


PARTITIONS: dict[str, Callable[..., Parts]] = {
    "pcdd": pcdd,
    "dirichlet": dirichlet,
    "dirichlet-per-client": dirichlet_per_client,
    "iid": iid,
}


def partition_indices(
    scheme: str,
    y_train: np.ndarray,
    y_test: np.ndarray,
    num_clients: int,
    seed: int,
    classes_per_client: int = 3,
    beta: float = 0.5,
    assignment: str = "flwr",
) -> Parts:
    """Per-client (train indices, test indices) for a named scheme.

    ``assignment`` is pcdd's class assignment (``"flwr"`` or ``"sequential"``); other schemes ignore it.
    """
    if num_clients < 1:
        raise ValueError(f"num-clients={num_clients} must be at least 1")
    if assignment not in PCDD_ASSIGNMENTS:
        raise ValueError(f"pcdd-assignment={assignment!r} is unknown; allowed: {list(PCDD_ASSIGNMENTS)}")
    if scheme == "pcdd":
        return pcdd(y_train, y_test, num_clients, seed, classes_per_client, assignment=assignment)
    if scheme == "dirichlet":
        return dirichlet(y_train, y_test, num_clients, seed, beta)
    if scheme == "dirichlet-per-client":
        return dirichlet_per_client(y_train, y_test, num_clients, seed, beta)
    if scheme == "iid":
        return iid(y_train, y_test, num_clients, seed)
    raise ValueError(f"partition={scheme!r} is unknown; allowed: {sorted(PARTITIONS)}")
