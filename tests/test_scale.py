"""Beyond one process: a two-node Ray cluster on loopback whose nodes declare logical GPUs, one run checking both
fractional GPU placement and the use of both nodes (the deployment engine: test_deployment).

The test starts real ``flwr`` / ``flower-*`` / ``ray`` processes and stops exactly the ones it started (by process
id and their process trees; never ``ray stop``, which stops every Ray on the machine). It is slow (about a minute
and a half on 2 cores) and marked ``slow``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.placement_probe import read_log
from benchmarks.processes import free_port as _free_port
from benchmarks.processes import stop_tree
from benchmarks.processes import superlink_pids as _superlink_on
from tests.flwr_cli import app_copy, flwr_run_args, isolated_env, start_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FLWR = shutil.which("flwr", path=str(BIN))
RAY = shutil.which("ray", path=str(BIN))
PROBE = "benchmarks.placement_probe:PlacementProbe"
needs_flwr = pytest.mark.skipif(FLWR is None, reason="flwr CLI not in the venv")


# -- processes -------------------------------------------------------------------------------------


def _env(home: Path, **extra: str) -> dict[str, str]:
    """An isolated environment (its own FLWR_HOME and local-SuperLink ports) with its own Ray temp dir."""
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths are length-limited
    return isolated_env(home, **{"RAY_TMPDIR": ray_tmp, "RAY_DEDUP_LOGS": "0", **extra})


@contextlib.contextmanager
def _local_superlink_stopped(env: dict[str, str]) -> Iterator[None]:
    """Stop the local SuperLink (and its children) that ``flwr run`` spawns for ``env``'s port, afterwards."""
    try:
        yield
    finally:
        stop_tree(_superlink_on(env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"]))
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def _probe_config(log_dir: Path, extra: str) -> str:
    return f"method='{PROBE}' method-args='{{\"log-dir\": \"{log_dir}\"}}' {extra}"


# -- a two-node Ray cluster with logical GPUs ----------------------------------------------------------


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def _ray_cluster(tmp: Path, cpus_per_node: int = 2) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """A head and a worker node on 127.0.0.1, each ``ray start --block`` in its own session, each with
    ``cpus_per_node`` CPUs and one logical GPU: GPU id 0 on the head, GPU id 1 on the worker (Ray takes a node's GPU
    ids from the ``CUDA_VISIBLE_DEVICES`` it starts with, as on a machine with two GPUs, one per node).

    Yields (address, the two node ids, head first, env with RAY_TMPDIR). On exit both process groups (the
    ``ray start`` process, GCS, raylet, workers and agents) are terminated.
    """
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": temp, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = [
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={cpus_per_node}",
        "--num-gpus=1",
        "--disable-usage-stats",
        "--object-store-memory=200000000",
        "--include-log-monitor=false",
    ]
    head_cmd = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"]
    head_cmd += [f"--ray-client-server-port={_free_port()}", "--no-monitor", *common]
    procs = [start_process(head_cmd, {**env, "CUDA_VISIBLE_DEVICES": "0"}, tmp / "ray-head.log")]
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):  # the head's GCS
            assert procs[0].poll() is None and time.monotonic() < deadline, (tmp / "ray-head.log").read_text()[-2000:]
            time.sleep(0.2)
        worker_cmd = [RAY, "start", f"--address={address}", *common]
        procs.append(start_process(worker_cmd, {**env, "CUDA_VISIBLE_DEVICES": "1"}, tmp / "ray-worker.log"))
        wait = (
            "import ray, sys, time\n"
            f"ray.init(address={address!r}, logging_level='ERROR')\n"
            "t = time.monotonic()\n"
            "while time.monotonic() - t < 90:\n"
            "    nodes = [n for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU')]\n"
            "    if len(nodes) == 2:\n"
            "        nodes.sort(key=lambda n: not n['Resources'].get('node:__internal_head__'))\n"
            "        print(' '.join(n['NodeID'] for n in nodes)); sys.exit(0)\n"
            "    time.sleep(0.5)\n"
            "sys.exit(1)\n"
        )
        res = subprocess.run([sys.executable, "-c", wait], env=env, capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, f"{res.stderr[-2000:]}\n{(tmp / 'ray-worker.log').read_text()[-2000:]}"
        yield address, res.stdout.split()[-2:], env
    finally:
        stop_tree([p.pid for p in procs], groups=[p.pid for p in procs])
        shutil.rmtree(temp, ignore_errors=True)


@needs_flwr
@pytest.mark.skipif(RAY is None, reason="ray CLI not in the venv")
def test_ray_cluster_with_logical_gpus_runs_two_actors_per_gpu_on_both_nodes(tmp_path: Path) -> None:
    """``flwr run`` with RAY_ADDRESS joins a running two-node cluster (2 CPUs and one logical GPU per node, GPU ids 0
    and 1); 0.5 GPU per client: 4 actors, two per node sharing its GPU; each reads the GPU id Ray gave it, and its
    results files are written."""
    logs = tmp_path / "probe"
    logs.mkdir()
    with _ray_cluster(tmp_path) as (address, node_ids, ray_env):
        # RAY_ADDRESS must be in the environment of the SuperLink that `flwr run` spawns (a fresh FLWR_HOME).
        env = _env(tmp_path / "flwr-home", RAY_ADDRESS=address, RAY_TMPDIR=ray_env["RAY_TMPDIR"])
        # With a cluster no init-args-* may be given: the nodes bring their CPUs and GPUs (2 + 2 = 4 actors).
        fed = "num-supernodes=4 client-resources-num-cpus=1 client-resources-num-gpus=0.5"
        run = _probe_config(logs, f"num-clients=4 num-server-rounds=2 local-epochs=8 output-dir='{tmp_path / 'out'}'")
        with _local_superlink_stopped(env):
            log = flwr_run_args(env, "--stream", "--federation-config", fed, "--run-config", run, app=app_copy())
    lines = read_log(logs)
    assert len(lines) == 8, log[-3000:]
    assert (tmp_path / "out" / "metrics.csv").exists(), log[-3000:]
    cuda = torch.cuda.is_available()
    gpu_of_node = dict(zip(node_ids, ("0", "1"), strict=True))  # the head's CUDA_VISIBLE_DEVICES=0, the worker's 1
    for line in lines:
        ray = line["ray"]
        assert ray["resources"] == {"CPU": 1.0, "GPU": 0.5}, line
        assert len(ray["gpu_ids"]) == 1 and ray["gpu_ids"][0] == gpu_of_node[ray["node_id"]], line
        assert ray["cuda_visible_devices"] == ray["gpu_ids"][0], line  # Ray exposes only the assigned GPU
        if not cuda:  # logical GPUs: torch sees none, so 'auto' falls back to the CPU
            assert line["auto_device"] == "cpu" and line["used_device"] == "cpu", line
        else:
            assert line["auto_device"] == "cuda:0", line
    for rnd in (1, 2):
        this = [x for x in lines if x["round"] == rnd]
        assert len({x["pid"] for x in this}) == 4, this  # four actors, one client each
        assert sorted(Counter(x["ray"]["gpu_ids"][0] for x in this).values()) == [2, 2], this
    # Two actors per GPU id (so two per node) for the whole run: clients ran on both nodes.
    per_actor = {x["ray"]["actor_id"]: x["ray"]["gpu_ids"][0] for x in lines}
    assert len(per_actor) == 4 and sorted(Counter(per_actor.values()).values()) == [2, 2], per_actor
    used = Counter(x["ray"]["node_id"] for x in lines)
    assert set(used) == set(node_ids), (used, node_ids)
