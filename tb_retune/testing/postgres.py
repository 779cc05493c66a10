"""A private PostgreSQL server, for the tests and benchmarks of a search's shared storage.

A search's trials can run on several processes through Optuna's ``RDBStorage``
(issue 18). This starts a throw-away server for that: ``initdb`` into a new
folder, the server's unix socket in that folder, TCP on ``127.0.0.1`` only, on a
free port, trust authentication for ``127.0.0.1`` only, ``fsync=off`` (unless
asked to be ``durable``). As root it
runs the server as the unprivileged ``postgres`` user (PostgreSQL refuses to run
as root). On the way out it stops the server and removes the folder.

The binaries are Debian's (``/usr/lib/postgresql/<version>/bin``, the
``postgresql`` package: ``make postgresql`` installs it; ``make test`` does).

Example:

```python
with postgres_server() as url:   # postgresql+psycopg2://postgres@127.0.0.1:PORT/tbr
    storage = optuna.storages.RDBStorage(url)
```
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

#: Where Debian's ``postgresql-<version>`` packages put the server's binaries.
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: The unprivileged account that runs the server when this process is root.
SERVER_USER = "postgres"
#: The database that :func:`postgres_server` creates.
DATABASE = "tbr"
#: Longest path of a unix socket (``sun_path`` is 108 bytes with its NUL).
_MAX_SOCKET_PATH = 107


class PostgresError(RuntimeError):
    """The private server could not be set up, started or reached; the message says what to do."""


def find_bin_dir() -> str | None:
    """The folder of PostgreSQL's server binaries (``initdb``, ``pg_ctl``), the newest
    Debian version first, else the one whose ``initdb`` is on ``PATH``; None if none."""

    def version(path: str) -> tuple[int, ...]:
        name = os.path.basename(os.path.dirname(path))
        return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)

    found = sorted((d for d in glob.glob(DEBIAN_BIN_GLOB) if os.access(os.path.join(d, "initdb"), os.X_OK)),
                   key=version, reverse=True)
    if found:
        return found[0]
    initdb = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(initdb)) if initdb else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the server may still lose it
    to another process before it binds: :func:`postgres_server` then tries another)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: str, chars: int = 3000) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return "(no log)"
    return text[-chars:] if text.strip() else "(the log is empty)"


def _read_from(path: str, offset: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return ""


class _Server:
    """One server's folder, binaries and the commands on it (see :func:`postgres_server`)."""

    def __init__(self, bin_dir: str, folder: str, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.folder = folder
        self.data = os.path.join(folder, "data")
        self.log = os.path.join(folder, "server.log")
        self.as_root = os.geteuid() == 0
        self.port = 0
        # The server's and the clients' environment: no PGHOST, PGPORT, PGDATA, ...
        # of this process may point them elsewhere.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.env["LC_ALL"] = "C"

    def command(self, name: str, *args: str, server_user: bool = True) -> list[str]:
        argv = [os.path.join(self.bin_dir, name), *args]
        if server_user and self.as_root:
            return ["runuser", "-u", SERVER_USER, "--", *argv]
        return argv

    def run(self, name: str, *args: str, server_user: bool = True, timeout: float = 120.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = self.command(name, *args, server_user=server_user)
        try:
            done = subprocess.run(argv, cwd=self.folder, env=self.env, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise PostgresError(f"{' '.join(argv)} did not finish within {timeout} s; the server's log "
                                f"({self.log}):\n{_tail(self.log)}") from e
        if check and done.returncode != 0:
            raise PostgresError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
                                f"\nthe end of the server's log:\n{_tail(self.log)}")
        return done

    def give_to_server_user(self) -> None:
        """As root: the folder belongs to ``postgres``, who must also be able to reach it."""
        if not self.as_root:
            return
        import pwd

        try:
            account = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PostgresError(f"running as root, but there is no {SERVER_USER!r} user to run the server as "
                                f"(PostgreSQL refuses to run as root): run `make postgresql`, whose "
                                f"Debian package creates it, or run the tests as another user") from None
        os.chown(self.folder, account.pw_uid, account.pw_gid)
        probe = subprocess.run(["runuser", "-u", SERVER_USER, "--", "test", "-w", self.folder, "-a", "-x",
                                self.folder], env=self.env, capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            raise PostgresError(f"the {SERVER_USER!r} user cannot write to {self.folder} (a folder above it is "
                                f"private to root?): give postgres_server() a base_dir that every user can "
                                f"reach, such as {tempfile.gettempdir()} (the default) {probe.stderr.strip()}")

    def initdb(self) -> None:
        self.run("initdb", "-D", self.data, "-U", "postgres", "--auth-local=peer", "--auth-host=trust",
                 "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
        # Trust on 127.0.0.1 only (initdb's file also trusts ::1 and replication).
        with open(os.path.join(self.data, "pg_hba.conf"), "w", encoding="utf-8") as f:
            f.write("# written by tb_retune.testing.postgres: a private server for tests\n"
                    "local all all peer\n"
                    "host  all all 127.0.0.1/32 trust\n")
        # Not durable (the default, for tests): nothing here must survive a crash.
        durability = "on" if self.durable else "off"
        with open(os.path.join(self.data, "postgresql.conf"), "a", encoding="utf-8") as f:
            f.write("\n# tb_retune.testing.postgres: a private server\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.folder}'\n"
                    "unix_socket_permissions = 0700\n"
                    f"fsync = {durability}\n"
                    f"synchronous_commit = {durability}\n"
                    f"full_page_writes = {durability}\n"
                    "max_connections = 200\n"
                    "shared_buffers = 32MB\n"
                    "log_min_messages = warning\n")

    def start(self, timeout: float, attempts: int = 5) -> None:
        """Starts the server on a free port; another port when one was taken meanwhile."""
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            seen = os.path.getsize(self.log) if os.path.exists(self.log) else 0
            # pg_ctl -w waits until the server accepts connections (or has exited).
            done = self.run("pg_ctl", "-D", self.data, "-l", self.log, "-o", f"-p {self.port}", "-w",
                            "-t", str(int(timeout)), "start", timeout=timeout + 30, check=False)
            if done.returncode == 0:
                break
            log = _tail(self.log)
            if "could not bind" in _read_from(self.log, seen) and attempt < attempts:
                self.stop()
                continue
            raise PostgresError(f"PostgreSQL did not start (pg_ctl exited with {done.returncode}: "
                                f"{(done.stdout + done.stderr).strip()}). The end of the server's log:\n{log}")
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Until the server answers on 127.0.0.1 (what the clients use), or ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            ready = self.run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                             "-d", "postgres", server_user=False, check=False)
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PostgresError(f"PostgreSQL on 127.0.0.1:{self.port} did not accept connections within "
                                    f"{timeout} s ({ready.stdout.strip()}). The end of the server's log:\n"
                                    f"{_tail(self.log)}")
            time.sleep(0.1)

    def create_database(self, name: str) -> None:
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name, server_user=False)

    def postmaster_pid(self) -> int | None:
        try:
            with open(os.path.join(self.data, "postmaster.pid"), encoding="utf-8") as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Stops the server: fast (rolls back open transactions), then immediate, then SIGKILL."""
        if self.postmaster_pid() is None:
            return
        for mode in ("fast", "immediate"):
            done = self.run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop", timeout=90,
                            check=False)
            if done.returncode == 0 or self.postmaster_pid() is None:
                return
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def postgres_server(base_dir: str | None = None, *, database: str = DATABASE, durable: bool = False,
                    timeout: float = 120.0) -> Iterator[str]:
    """Runs a private PostgreSQL server for the block and yields its SQLAlchemy URL.

    The URL is ``postgresql+psycopg2://postgres@127.0.0.1:<port>/<database>``
    (what ``optuna.storages.RDBStorage`` takes; the ``psycopg2`` driver is in
    the ``test`` extra). The server's files live in a new folder under
    ``base_dir``; it is removed on the way out, after the server stopped.

    Example:

    ```python
    with postgres_server() as url:
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=1)
        study = optuna.create_study(storage=storage)
    ```

    Args:
        base_dir: String or None. Where to make the server's folder. As root, the
            ``postgres`` user must be able to reach it (pytest's ``tmp_path`` is
            private to root: not there). Defaults to the system's temporary folder.
        database: String. The database to create. Defaults to ``"tbr"``.
        durable: Bool. ``fsync``, ``synchronous_commit`` and ``full_page_writes``
            on, as a real server (a commit waits for its WAL on disk), e.g. to time
            it against a journal file that fsyncs each write. Defaults to False:
            all three off, for tests.
        timeout: Float. Seconds to wait for each step (``initdb``, the start, the
            first connection). Defaults to 120.

    Raises:
        PostgresError: the binaries are missing (run ``make postgresql``), or the
            server did not start (the message holds the end of its log).
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresError(f"PostgreSQL's server binaries are not installed (no {DEBIAN_BIN_GLOB}/initdb, no "
                            f"initdb on PATH): run `make postgresql` (Debian's postgresql package; "
                            f"`make test` runs it)")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise PostgresError(f"database must be a plain SQL name (letters, digits, _). Received: database={database!r}")
    folder = tempfile.mkdtemp(prefix="tbr-pg-", dir=base_dir)
    server = _Server(bin_dir, folder, durable)
    try:
        socket_path = os.path.join(folder, ".s.PGSQL.65535")
        if len(socket_path) > _MAX_SOCKET_PATH:
            raise PostgresError(f"the server's socket {socket_path} would be longer than {_MAX_SOCKET_PATH} "
                                f"characters: give postgres_server() a shorter base_dir (such as /tmp)")
        server.give_to_server_user()
        server.initdb()
        server.start(timeout)
        server.create_database(database)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{server.port}/{database}"
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
