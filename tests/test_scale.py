"""Beyond one process: logical GPUs, a two-node Ray cluster and Flower's deployment engine, all on loopback.

Every test starts real ``flwr`` / ``flower-*`` / ``ray`` processes and stops
exactly the ones it started (by process id and their process trees; never
``ray stop``, which stops every Ray on the machine). They are slow (about a
minute each on 2 cores) and marked ``slow``. Simulations go to this test
process's local SuperLink (:func:`simulations.local.local_superlink`) unless
its environment must differ (the Ray cluster's address); the two deployment
tests read one deployment's run, compared with the same run config on
in-process nodes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from benchmarks.placement_probe import read_log
from benchmarks.processes import free_port as _free_port
from benchmarks.processes import stop_tree
from benchmarks.processes import superlink_pids as _superlink_on
from simulations.experiments.plan import run_config_string
from simulations.local import local_superlink
from tests.flwr_cli import isolated_env
from tests.inprocess import run_in_process

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


def _flwr_run(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    res = subprocess.run([FLWR, "run", ".", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return res.stdout + res.stderr


def _probe_config(log_dir: Path, extra: str) -> str:
    return f"method='{PROBE}' method-args='{{\"log-dir\": \"{log_dir}\"}}' {extra}"


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies, even if it is killed (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in a session of its own (its process group is stopped as a whole); it ends with this process."""
    with log.open("w") as f:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )


# -- (a) logical GPUs ------------------------------------------------------------------------------


@needs_flwr
def test_logical_gpus_give_four_actors_each_on_its_ray_gpu(tmp_path: Path) -> None:
    """2 logical GPUs, 0.5 GPU per client: 4 actors, two per GPU id; each reads the GPU id Ray gave it."""
    logs = tmp_path / "probe"
    logs.mkdir()
    fed = "num-supernodes=4 init-args-num-gpus=2 init-args-num-cpus=4 client-resources-num-cpus=1"
    fed += " client-resources-num-gpus=0.5"
    run = _probe_config(logs, f"num-clients=4 num-server-rounds=2 local-epochs=8 output-dir='{tmp_path / 'out'}'")
    log = _flwr_run(local_superlink().env, "--stream", "--federation-config", fed, "--run-config", run)
    lines = read_log(logs)
    assert len(lines) == 8, log[-3000:]
    cuda = torch.cuda.is_available()
    for line in lines:
        ray = line["ray"]
        assert ray["resources"] == {"CPU": 1.0, "GPU": 0.5}, line
        assert len(ray["gpu_ids"]) == 1 and ray["gpu_ids"][0] in {"0", "1"}, line
        assert ray["cuda_visible_devices"] == ray["gpu_ids"][0], line  # Ray exposes only the assigned GPU
        if not cuda:  # logical GPUs: torch sees none, so 'auto' falls back to the CPU
            assert line["auto_device"] == "cpu" and line["used_device"] == "cpu", line
        else:
            assert line["auto_device"] == "cuda:0", line
    for rnd in (1, 2):
        this = [x for x in lines if x["round"] == rnd]
        assert len({x["pid"] for x in this}) == 4, this  # four actors, one client each
        assert sorted(Counter(x["ray"]["gpu_ids"][0] for x in this).values()) == [2, 2], this
    # Two actors per GPU id for the whole run.
    per_actor = {x["ray"]["actor_id"]: x["ray"]["gpu_ids"][0] for x in lines}
    assert len(per_actor) == 4 and sorted(Counter(per_actor.values()).values()) == [2, 2], per_actor


# -- (b) a two-node Ray cluster ------------------------------------------------------------------


@contextlib.contextmanager
def _ray_cluster(tmp: Path, cpus_per_node: int = 2) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """A head and a worker node on 127.0.0.1, each ``ray start --block`` in its own session.

    Yields (address, the two node ids, env with RAY_TMPDIR). On exit both process groups
    (the ``ray start`` process, GCS, raylet, workers and agents) are terminated.
    """
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": temp, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = [
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={cpus_per_node}",
        "--num-gpus=0",
        "--disable-usage-stats",
        "--object-store-memory=200000000",
    ]
    head_cmd = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"]
    head_cmd += [f"--ray-client-server-port={_free_port()}", *common]
    procs = [_start(head_cmd, env, tmp / "ray-head.log")]
    try:
        time.sleep(3)
        procs.append(_start([RAY, "start", f"--address={address}", *common], env, tmp / "ray-worker.log"))
        wait = (
            "import ray, sys, time\n"
            f"ray.init(address={address!r}, logging_level='ERROR')\n"
            "t = time.monotonic()\n"
            "while time.monotonic() - t < 90:\n"
            "    ids = [n['NodeID'] for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU')]\n"
            "    if len(ids) == 2: print(' '.join(ids)); sys.exit(0)\n"
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
def test_ray_cluster_on_loopback_runs_clients_on_both_nodes(tmp_path: Path) -> None:
    """``flwr run`` with RAY_ADDRESS joins a running two-node cluster; clients run on both nodes."""
    logs = tmp_path / "probe"
    logs.mkdir()
    with _ray_cluster(tmp_path) as (address, node_ids, ray_env):
        # RAY_ADDRESS must be in the environment of the SuperLink that `flwr run` spawns (a fresh FLWR_HOME).
        env = _env(tmp_path / "flwr-home", RAY_ADDRESS=address, RAY_TMPDIR=ray_env["RAY_TMPDIR"])
        # With a cluster no init-args-* may be given: the nodes bring their CPUs (2 + 2 = 4 actors).
        fed = "num-supernodes=4 client-resources-num-cpus=1"
        run = _probe_config(logs, f"num-clients=4 num-server-rounds=2 local-epochs=2 output-dir='{tmp_path / 'out'}'")
        with _local_superlink_stopped(env):
            log = _flwr_run(env, "--stream", "--federation-config", fed, "--run-config", run)
    lines = read_log(logs)
    assert len(lines) == 8, log[-3000:]
    used = Counter(x["ray"]["node_id"] for x in lines)
    assert set(used) == set(node_ids), (used, node_ids)
    assert (tmp_path / "out" / "metrics.csv").exists(), log[-3000:]


# -- (c) Flower's deployment engine ------------------------------------------------------------------


def _write_connections(home: Path, name: str, address: str, root_certificates: Path | None = None) -> None:
    home.mkdir(parents=True, exist_ok=True)
    secure = f'root-certificates = "{root_certificates}"' if root_certificates else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n\n'
        f'[superlink.{name}]\naddress = "{address}"\n{secure}\n'
    )


@contextlib.contextmanager
def _deployment(
    tmp: Path, env: dict[str, str], num_nodes: int, tls: dict[str, Path] | None = None, auth_keys: list[Path] = ()
) -> Iterator[str]:
    """A SuperLink and ``num_nodes`` SuperNodes (partition i of num_nodes) on loopback, declared as the
    connection ``loop`` in ``$FLWR_HOME/config.toml``; yields its address.

    ``tls``: ``ca``, ``cert`` and ``key`` files (HTTPS on the SuperLink, nodes verify with ``ca``).
    ``auth_keys``: one OpenSSH private key per node; the SuperLink then authenticates SuperNodes, and
    the matching public keys (``<key>.pub``) are registered through ``flwr supernode register``.
    """
    port = _free_port()
    address = f"127.0.0.1:{port}"
    link_cmd = ["flower-superlink", "--host", "127.0.0.1", "--port", str(port)]
    link_cmd += ["--disable-runtime-dependency-installation", "--database", str(tmp / "superlink.db")]
    if tls:
        link_cmd += ["--ssl-ca-certfile", str(tls["ca"]), "--ssl-certfile", str(tls["cert"])]
        link_cmd += ["--ssl-keyfile", str(tls["key"])]
    else:
        link_cmd.append("--insecure")
    if auth_keys:
        link_cmd.append("--enable-supernode-auth")
    _write_connections(Path(env["FLWR_HOME"]), "loop", address, tls["ca"] if tls else None)
    procs = [_start(link_cmd, env, tmp / "superlink.log")]
    try:
        _wait_for_port(port, procs[0], tmp / "superlink.log")
        for key in auth_keys:
            res = subprocess.run(
                [FLWR, "supernode", "register", f"{key}.pub", "loop"], env=env, capture_output=True, text=True
            )
            assert res.returncode == 0 and "registered" in res.stdout, res.stdout + res.stderr
        # One thread per client, as in a Ray actor with client-resources-num-cpus=1.
        node_env = {**env, "OMP_NUM_THREADS": "1"}
        for i in range(num_nodes):
            cmd = ["flower-supernode", "--superlink", address, "--port", str(_free_port())]
            cmd += ["--node-config", f"partition-id={i} num-partitions={num_nodes}"]
            cmd += ["--root-certificates", str(tls["ca"])] if tls else ["--insecure"]
            if auth_keys:
                cmd += ["--auth-supernode-private-key", str(auth_keys[i])]
            procs.append(_start(cmd, node_env, tmp / f"supernode-{i}.log"))
        yield address
    finally:
        stop_tree([p.pid for p in procs], groups=[p.pid for p in procs])


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port} after {timeout} s: {log.read_text()[-3000:]}")


def _results(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    metrics = pd.read_csv(out / "metrics.csv").drop(columns=["round_seconds"])
    return metrics, pd.read_csv(out / "clients.csv")


def _tls_files(tmp: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it (made with cryptography)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer, ca: bool) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedetf test CA")])
    ca = build("fedetf test CA", ca_key, ca_name, ca_key, True)
    cert = build("127.0.0.1", key, ca_name, ca_key, False)
    pem = serialization.Encoding.PEM
    files = {"ca": tmp / "ca.crt", "cert": tmp / "server.pem", "key": tmp / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(pem))
    files["cert"].write_bytes(cert.public_bytes(pem))
    files["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return files


def _node_keys(tmp: Path, n: int) -> list[Path]:
    """``n`` P-384 key pairs in OpenSSH format (``node-i`` and ``node-i.pub``), as ``ssh-keygen -t ecdsa -b 384``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP384R1())
        path = tmp / f"node-{i}"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        Path(f"{path}.pub").write_bytes(pub + b"\n")
        out.append(path)
    return out


#: The run compared across engines (2 rounds: the second starts from an aggregated model). On the CPU: on a machine
#: with a GPU, the SuperNodes' ClientApps would train on it, where float sums need not repeat bitwise.
RUN = {"num-clients": 2, "num-server-rounds": 2, "local-epochs": 1, "seed": 3, "device": "cpu"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One secure deployment on loopback (HTTPS with a test CA, two SuperNodes authenticated by registered keys,
    a third node with an unregistered key) running ``RUN``; then the same run config in-process."""
    if FLWR is None:
        pytest.skip("flwr CLI not in the venv")
    tmp = tmp_path_factory.mktemp("deployment")
    tls = _tls_files(tmp)
    keys = _node_keys(tmp, 3)
    env = isolated_env(tmp / "flwr-home")
    dep, ref = tmp / "deployment", tmp / "in-process"
    run = run_config_string(RUN)
    with _deployment(tmp, env, num_nodes=2, tls=tls, auth_keys=keys[:2]) as address:
        # A third node with a key nobody registered (the SuperLink must refuse it).
        cmd = ["flower-supernode", "--superlink", address, "--root-certificates", str(tls["ca"])]
        cmd += ["--port", str(_free_port()), "--auth-supernode-private-key", str(keys[2])]
        cmd += ["--node-config", "partition-id=1 num-partitions=2", "--max-retries", "2"]
        intruder = _start(cmd, env, tmp / "intruder.log")
        try:
            log = _flwr_run(env, "loop", "--stream", "--run-config", f"{run} output-dir='{dep}'")
            nodes = subprocess.run(
                [FLWR, "supernode", "list", "loop", "--format", "json"], env=env, capture_output=True, text=True
            )
        finally:
            stop_tree([intruder.pid], groups=[intruder.pid])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the SuperNodes' ClientApps (OMP_NUM_THREADS=1): the same float sums
    try:
        outcome = run_in_process({**RUN, "output-dir": str(ref)})
    finally:
        torch.set_num_threads(threads)
    yield {
        "tmp": tmp,
        "dep": dep,
        "ref": ref,
        "log": log + (tmp / "supernode-0.log").read_text()[-2000:],
        "ref_log": "\n".join(outcome.lines),
        "nodes": nodes.stdout,
    }


def test_deployment_engine_on_loopback_equals_the_in_process_run(deployment: dict[str, Any]) -> None:
    """One SuperNode per partition: the results files equal those of the same run config on in-process nodes
    (which equal the Ray simulation's: test_flwr_cli), for the same seed."""
    dep, ref = deployment["dep"], deployment["ref"]
    assert (dep / "metrics.csv").exists(), deployment["log"][-5000:]
    assert (ref / "metrics.csv").exists(), deployment["ref_log"][-3000:]
    (dm, dc), (rm, rc) = _results(dep), _results(ref)
    assert len(dm) == 2 and len(dc) == 4
    assert dm["num_clients"].tolist() == [2, 2]
    pd.testing.assert_frame_equal(dm, rm, check_exact=True)
    pd.testing.assert_frame_equal(dc, rc, check_exact=True)
    configs = [json.loads((d / "run.json").read_text())["config"] for d in (dep, ref)]
    for config in configs:
        config.pop("output-dir")
    assert configs[0] == configs[1]


def test_deployment_engine_secure_tls_and_node_authentication(deployment: dict[str, Any]) -> None:
    """HTTPS with a test CA and SuperNode authentication with registered keys; an unregistered node is refused."""
    assert (deployment["dep"] / "run.json").exists(), deployment["log"][-5000:]
    nodes = deployment["nodes"]
    listed = json.loads(nodes[nodes.index("{") :])["nodes"]
    assert len(listed) == 2 and {n["status"] for n in listed} == {"online"}, listed
    refused = (deployment["tmp"] / "intruder.log").read_text()
    assert "Failed to activate SuperNode" in refused, refused[-3000:]
