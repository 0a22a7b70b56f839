"""Flower's deployment engine on loopback: a secure SuperLink and SuperNodes (HTTPS with a test CA, node
authentication), one run compared with the same run config on in-process nodes.

Every process is started here and stopped by process group (``slow``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from benchmarks.processes import free_port as _free_port
from benchmarks.processes import stop_tree
from simulations.experiments.plan import run_config_string
from tests.flwr_cli import FLWR, app_copy, flwr_run_args, isolated_env, start_process
from tests.inprocess import assert_same_results, results, run_in_process

pytestmark = pytest.mark.slow


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
    link_cmd += ["--disable-runtime-dependency-installation"]  # its state in memory (the default)
    if tls:
        link_cmd += ["--ssl-ca-certfile", str(tls["ca"]), "--ssl-certfile", str(tls["cert"])]
        link_cmd += ["--ssl-keyfile", str(tls["key"])]
    else:
        link_cmd.append("--insecure")
    if auth_keys:
        link_cmd.append("--enable-supernode-auth")
    _write_connections(Path(env["FLWR_HOME"]), "loop", address, tls["ca"] if tls else None)
    procs = [start_process(link_cmd, env, tmp / "superlink.log")]
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
            procs.append(start_process(cmd, node_env, tmp / f"supernode-{i}.log"))
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


#: The run compared across engines: one round (a round's messages, the handshake's and the train messages, each a
#: ClientApp process of its own here, torch imported afresh; later rounds and the all-client evaluation travel the
#: same way, and the Ray engine's runs have them: test_flwr_cli, test_sweep). On the CPU: on a machine with a GPU,
#: the SuperNodes' ClientApps would train on it, where float sums need not repeat bitwise.
RUN = {"num-clients": 2, "num-server-rounds": 1, "local-epochs": 1, "seed": 3, "device": "cpu", "evaluate-every": 0}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One secure deployment on loopback (HTTPS with a test CA, two SuperNodes authenticated by registered keys,
    a third node with an unregistered key) running ``RUN``; meanwhile the same run config in-process."""
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
        intruder = start_process(cmd, env, tmp / "intruder.log")

        def deployed_run() -> tuple[str, str]:
            # The app from a copy without .venv (`flwr run .` walks every file of its folder: tests/flwr_cli.py).
            log = flwr_run_args(env, "loop", "--stream", "--run-config", f"{run} output-dir='{dep}'", app=app_copy())
            nodes = subprocess.run(
                [FLWR, "supernode", "list", "loop", "--format", "json"], env=env, capture_output=True, text=True
            )
            return log, nodes.stdout

        try:
            with ThreadPoolExecutor(1) as pool:
                deployed = pool.submit(deployed_run)
                # Meanwhile the same run config in-process, with one torch thread (tests/conftest.py), as in the
                # SuperNodes' ClientApps (OMP_NUM_THREADS=1): the same float sums.
                outcome = run_in_process({**RUN, "output-dir": str(ref)})
                log, nodes = deployed.result()
        finally:
            stop_tree([intruder.pid], groups=[intruder.pid])
    yield {
        "tmp": tmp,
        "dep": dep,
        "ref": ref,
        "log": log + (tmp / "supernode-0.log").read_text()[-2000:],
        "ref_log": "\n".join(outcome.lines),
        "nodes": nodes,
    }


def test_deployment_engine_on_loopback_equals_the_in_process_run(deployment: dict[str, Any]) -> None:
    """One SuperNode per partition: the results files equal those of the same run config on in-process nodes
    (which equal the Ray simulation's: test_flwr_cli), for the same seed."""
    dep, ref = deployment["dep"], deployment["ref"]
    assert (dep / "metrics.csv").exists(), deployment["log"][-5000:]
    assert (ref / "metrics.csv").exists(), deployment["ref_log"][-3000:]
    dm, dc = results(dep)
    assert len(dm) == 1 and len(dc) == 2
    assert dm["num_clients"].tolist() == [2]
    assert_same_results(dep, ref)
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
