"""Throwaway PostgreSQL 15 cluster for tests and benchmarks.

Small, dependency-free helper (stdlib only) that other test suites may reuse::

    from pgserver import PgServer

    with PgServer() as pg:              # initdb + pg_ctl start in a temp dir
        print(pg.dsn)                   # "host=127.0.0.1 port=NNNNN user=postgres dbname=postgres"
        pg.url                          # same as a postgresql:// URL
        pg.create_database("foo")       # -> DSN of the new database
    # stopped and removed here

or ``pg = PgServer().start()`` ... ``pg.stop()``.

* When running as root, every server binary runs as the ``postgres`` OS user through
  ``runuser -u postgres --`` (PostgreSQL refuses to run as root); otherwise as the
  current user.
* Listens on 127.0.0.1 only, on a free TCP port; the unix socket lives in the temp dir.
* ``password=None`` (default): trust authentication.  With a password: scram-sha-256
  for TCP connections, and the password is part of ``dsn``/``url``.
* ``fast=True`` (default) sets fsync/synchronous_commit/full_page_writes off: fine for
  tests, not for benchmarks (pass ``fast=False``).  ``settings`` adds ``-c name=value``
  server options (e.g. ``{"max_wal_size": "4GB"}``).
* Binaries are looked up in ``$PG_BINDIR`` or /usr/lib/postgresql/15/bin.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import quote

__all__ = ["PgServer", "pg_available"]

DEFAULT_BINDIR = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")


def pg_available(bindir: str = DEFAULT_BINDIR) -> bool:
    """True when initdb/pg_ctl exist (so a fixture can skip cleanly otherwise)."""
    return all(os.access(os.path.join(bindir, b), os.X_OK) for b in ("initdb", "pg_ctl"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A throwaway PostgreSQL cluster; see the module docstring."""

    def __init__(self, *, bindir: str = DEFAULT_BINDIR, user: str = "postgres",
                 password: str | None = None, fast: bool = True,
                 settings: dict[str, str] | None = None, base_dir: str | None = None):
        self.bindir = bindir
        self.user = user
        self.password = password
        self.fast = fast
        self.settings = dict(settings or {})
        self.base_dir = base_dir
        self.port: int | None = None
        self.tmpdir: str | None = None
        self.datadir: str | None = None
        self._as_root = os.geteuid() == 0

    # -- helpers -----------------------------------------------------------------
    def _cmd(self, *args: str) -> list[str]:
        if self._as_root:
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(self._cmd(*args), check=check, capture_output=True, text=True,
                              cwd=self.tmpdir or "/")

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def dsn(self) -> str:
        """libpq key/value conninfo of the ``postgres`` database."""
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        parts = [f"host={self.host}", f"port={self.port}", f"user={self.user}", f"dbname={dbname}"]
        if self.password:
            parts.append("password='%s'" % self.password.replace("\\", "\\\\").replace("'", "\\'"))
        return " ".join(parts)

    @property
    def url(self) -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/postgres"

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> "PgServer":
        if not pg_available(self.bindir):
            raise RuntimeError(f"PostgreSQL binaries not found in {self.bindir}")
        self.tmpdir = tempfile.mkdtemp(prefix="pgserver-", dir=self.base_dir)
        os.chmod(self.tmpdir, 0o755)
        self.datadir = os.path.join(self.tmpdir, "data")
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
        initdb = [os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", self.user,
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
        if self.password:
            pwfile = os.path.join(self.tmpdir, "pwfile")
            with open(pwfile, "w") as f:
                f.write(self.password + "\n")
            if self._as_root:
                os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            initdb += ["--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256"]
        else:
            initdb += ["--auth=trust"]
        res = self._run(*initdb, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed: {res.stderr}")
        if self.password:
            os.unlink(os.path.join(self.tmpdir, "pwfile"))
        opts = {"listen_addresses": "127.0.0.1", "unix_socket_directories": self.tmpdir,
                "max_connections": "50", "timezone": "UTC"}
        if self.fast:
            opts.update({"fsync": "off", "synchronous_commit": "off",
                         "full_page_writes": "off"})
        opts.update(self.settings)
        last_err = ""
        for _attempt in range(5):
            self.port = _free_port()
            opts["port"] = str(self.port)
            o = self._opts = " ".join(f"-c {k}={v}" for k, v in opts.items())
            res = self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-w",
                            "-t", "60", "-l", os.path.join(self.tmpdir, "server.log"),
                            "-o", o, "start", check=False)
            if res.returncode == 0:
                return self
            last_err = res.stderr + self.log_tail()
        raise RuntimeError(f"pg_ctl start failed: {last_err}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            with open(os.path.join(self.tmpdir, "server.log")) as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def is_running(self) -> bool:
        if not self.datadir:
            return False
        res = self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "status",
                        check=False)
        return res.returncode == 0

    def restart(self, mode: str = "fast") -> None:
        """Stop (``mode``: smart/fast/immediate) and start again on the same port."""
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", mode,
                  "-w", "stop", check=False)
        res = self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-w", "-t",
                        "60", "-l", os.path.join(self.tmpdir, "server.log"), "-o", self._opts,
                        "start", check=False)
        if res.returncode != 0:
            raise RuntimeError(f"restart failed: {res.stderr}{self.log_tail()}")

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` (via psql) and return its DSN."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        res = self._run(os.path.join(self.bindir, "psql"), "-X", "-q", "-At", "-v",
                        "ON_ERROR_STOP=1", "-h", self.tmpdir, "-p", str(self.port), "-U",
                        self.user, "-d", dbname, "-c", sql, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"psql failed: {res.stderr}")
        return res.stdout

    def stop(self) -> None:
        if self.datadir and os.path.isdir(self.datadir):
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m",
                      "immediate", "-w", "stop", check=False)
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = self.datadir = None

    def __enter__(self) -> "PgServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
