"""A real PostgreSQL server for a test: initdb + pg_ctl into a temp folder, a random loopback port,
stopped and removed afterwards. Runs the server as `nobody` when the tests run as root (postgres
refuses to run as root)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def available() -> str | None:
    """None when a server can be started here, else why not."""
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if not _binary(b)]
    return f"no PostgreSQL server binaries ({', '.join(missing)}) on this machine" if missing else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server() -> Iterator[str]:
    """Start a throwaway server; yields its URL (postgresql://USER@127.0.0.1:PORT/kt)."""
    root = Path(tempfile.mkdtemp(prefix="kt-pg-"))
    user = "nobody" if os.geteuid() == 0 else None
    as_user = ["runuser", "-u", user, "--"] if user else []
    data, sock, port = root / "data", root / "sock", _free_port()
    sock.mkdir()
    if user:
        shutil.chown(root, user)
        shutil.chown(sock, user)
        os.chmod(root, 0o700)
    env = {**os.environ, "LC_ALL": "C"}
    try:
        subprocess.run([*as_user, _binary("initdb"), "-D", str(data), "-A", "trust", "-U", "kt", "-E", "UTF8",
                        "--no-locale", "--no-sync"],
                       check=True, capture_output=True, env=env)
        subprocess.run([*as_user, _binary("pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
                        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True, env=env)
        subprocess.run([*as_user, _binary("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "kt",
                        "kt"], check=True, capture_output=True, env=env)
        yield f"postgresql://kt@127.0.0.1:{port}/kt"
    finally:
        subprocess.run([*as_user, _binary("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, env=env)
        shutil.rmtree(root, ignore_errors=True)
