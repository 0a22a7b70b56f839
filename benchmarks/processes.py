"""Processes of a local Flower/Ray deployment, read from /proc: find, measure and stop only our own.

For the benchmarks and tests that start SuperLinks, SuperNodes and Ray nodes (not part of the
installed package): they stop exactly the process trees they started, never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            ppid = int(text[text.rindex(")") + 2 :].split()[1])
            tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def process_tree(roots: Iterable[int]) -> list[int]:
    """The given pids and all their descendants, each once (a root may descend from another root)."""
    tree, out, todo = children(), [], list(roots)
    seen: set[int] = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        out.append(p)
        todo.extend(tree.get(p, []))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_tree(roots: Iterable[int], grace: float = 10.0, groups: Iterable[int] = ()) -> None:
    """SIGTERM these processes, their descendants and the process groups ``groups``;
    SIGKILL what is left after ``grace`` seconds."""
    targets, groups = process_tree(roots), list(groups)
    for g in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(g, signal.SIGTERM)
    for p in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in targets):
        time.sleep(0.2)
    for g in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(g, signal.SIGKILL)
    for p in targets:
        if alive(p):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)


def superlink_pids(port: str) -> list[int]:
    """Pids of ``flower-superlink`` processes started with ``--port <port>`` (the local one ``flwr`` spawned)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
            if any(a.endswith("flower-superlink") for a in argv[:2]) and any(
                a == "--port" and b == port for a, b in zip(argv, argv[1:], strict=False)
            ):
                found.append(int(cmdline.parent.name))
    return found
