"""The embedded default: with no DATABASE_URL, `exchange` runs its own cluster in EXCHANGE_HOME."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.pgcluster import Cluster

EXCHANGE = str(Path(sys.executable).with_name("exchange"))
SERVE_READY_TIMEOUT_SECONDS = 60


@pytest.fixture
def embedded_env() -> Iterator[dict[str, str]]:
    base = Path(tempfile.mkdtemp(prefix="exchange-home-"))
    base.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ADMIN_DATABASE_URL")}
    env["EXCHANGE_HOME"] = str(base / "home")
    yield env
    Cluster(Path(env["EXCHANGE_HOME"])).stop()  # in case a failed test left it running
    shutil.rmtree(base, ignore_errors=True)


def exchange(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXCHANGE, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_commands_create_migrate_and_reuse_the_embedded_database(
    embedded_env: dict[str, str],
) -> None:
    assert exchange(embedded_env, "asset", "create", "USD", "--scale", "2").returncode == 0
    tenant = exchange(embedded_env, "tenant", "create", "acme").stdout.strip()
    created = exchange(
        embedded_env, "customer", "create", "--tenant", tenant, "--external-ref", "alice"
    )
    customer = created.stdout.strip()
    deposit = exchange(
        embedded_env,
        "deposit",
        "--customer",
        customer,
        "--asset",
        "USD",
        "--amount",
        "12.50",
        "--idempotency-key",
        "d1",
    )
    assert deposit.returncode == 0, deposit.stderr

    verify = exchange(embedded_env, "verify")
    balances = exchange(embedded_env, "balances", "--customer", customer)

    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "12.50" in balances.stdout
    home = Path(embedded_env["EXCHANGE_HOME"])
    assert (home / "pgdata" / "PG_VERSION").exists()
    assert not Cluster(home).running(), "each command stops the cluster it started"


def test_serve_answers_health_and_stops_its_cluster_on_ctrl_c(
    embedded_env: dict[str, str],
) -> None:
    port = free_port()
    server = subprocess.Popen(
        [EXCHANGE, "serve", "--port", str(port)],
        env=embedded_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + SERVE_READY_TIMEOUT_SECONDS
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    status = r.status
                    break
            except OSError:
                time.sleep(0.2)
        assert status == 200
        assert Cluster(Path(embedded_env["EXCHANGE_HOME"])).running()
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)

    assert server.returncode == 0, output
    assert not Cluster(Path(embedded_env["EXCHANGE_HOME"])).running()
