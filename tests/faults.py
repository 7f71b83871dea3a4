"""Real processes to break, for the fault suite (tests/test_faults.py).

The portal runs as it does in production: several `manage.py rqworker` processes and one
`manage.py reconcile --loop`, each with its own working copy of one bare GitOps repository, against
PostgreSQL, Redis and the Argo CD stand-in (tests/servers/argocd.py). A scenario may give them a
Redis server or a PostgreSQL cluster of its own (`OwnRedis`, `OwnPostgres`) so it can kill and
restart it without touching the suite's.

Settings for the processes are short (leases, reconcile interval, Argo CD polls) so that a
scenario fits in a minute or two; they are the documented settings, nothing test-only.
"""

import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection

# What the portal's processes run with in these scenarios (see docs/configuration.md).
PROCESS_SETTINGS = {
    "PIPELINE_LEASE_SECONDS": "5",
    "RECONCILE_SECONDS": "2",
    "PIPELINE_RETRY_SECONDS": "300",
    "GITOPS_LOCK_SECONDS": "15",
    "GITOPS_NETWORK_TIMEOUT_SECONDS": "15",
    "ARGOCD_POLL_SECONDS": "0.3",
    "ARGOCD_SYNC_TIMEOUT_SECONDS": "90",
    "CONN_MAX_AGE": "60",
}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate, timeout, what, every=0.2):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)


def database_url(settings_dict):
    return (
        f"postgres://{settings_dict['USER']}:{settings_dict['PASSWORD']}@{settings_dict['HOST']}:"
        f"{settings_dict['PORT']}/{settings_dict['NAME']}"
    )


class Portal:
    """The portal's worker and reconciler processes, each logging to a file of its own."""

    def __init__(self, root, env):
        self.root = Path(root)
        self.env = {**os.environ, **PROCESS_SETTINGS, **env}
        self.workers = {}
        self.reconciler = None
        self.kills = 0
        # Every process started, each the leader of a process group of its own. A worker SIGKILLed
        # alone has its scheduler stopped by the kernel (releases/worker.py); should any child
        # outlive it all the same, stop() ends its group, so no scenario leaves a process running.
        self.groups = []

    def _spawn(self, name, args, **env):
        log = open(self.root / f"{name}.log", "a")  # noqa: SIM115 - the process owns it
        log.write(f"\n--- started at {time.strftime('%H:%M:%S')} ---\n")
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=settings.BASE_DIR,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.groups.append(process.pid)
        return process

    def start(self, workers=3):
        for slot in range(workers):
            self.start_worker(slot)
        self.reconciler = self._spawn("reconciler", ["reconcile", "--loop"], GITOPS_WORKDIR=str(self.root / "rec"))

    def start_worker(self, slot):
        # The same working copy for a slot's every process: a replacement meets what a killed one left.
        self.workers[slot] = self._spawn(
            f"worker-{slot}",
            ["rqworker", "--with-scheduler", "default"],
            GITOPS_WORKDIR=str(self.root / f"worker-{slot}"),
        )

    def kill_worker(self, slot):
        """SIGKILL the slot's worker and start another in its place at once."""
        process = self.workers[slot]
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.kills += 1
        self.start_worker(slot)

    def slot_of(self, pid):
        return next((slot for slot, process in self.workers.items() if process.pid == pid), None)

    def kill_workers_repeatedly(self, seconds, every=(1.5, 3.5), target=None, rng=None):
        """SIGKILL a worker every `every` seconds for `seconds`: the slot `target()` names (a worker in
        the middle of a step), or any when it names none."""
        rng = rng or random.Random()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(*every))
            slot = target() if target is not None else None
            self.kill_worker(rng.choice(list(self.workers)) if slot is None else slot)

    def stop(self):
        for process in [*self.workers.values(), self.reconciler]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers.values(), self.reconciler]:
            if process is None:
                continue
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for group in self.groups:
            # Only while its leader's pid is free: a pid in use again may lead another test's group.
            if not Path(f"/proc/{group}").exists():
                with suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)

    def logs(self, lines=40):
        """The last lines of every process's log, for a failure's message."""
        text = []
        for log in sorted(self.root.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            text.append(f"==> {log.name} <==\n" + "\n".join(tail))
        return "\n".join(text)


class OwnRedis:
    """A Redis server of the scenario's own, without persistence: restarted, it comes back empty."""

    def __init__(self):
        self.port = free_port()
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        import redis

        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)

        def answers():
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait_until(answers, 10, "Redis answering")
        client.close()

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


class OwnPostgres:
    """A PostgreSQL cluster of the scenario's own: initdb into a temporary directory, pg_ctl on a
    free port, the suite's schema copied in from the test database with pg_dump."""

    def __init__(self):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(path.split("/")[4]))
        if not found:
            raise RuntimeError("No PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        # Not under pytest's tmp_path: the server runs as postgres when the suite runs as root, and
        # pytest's directories are root's alone.
        self.root = Path(tempfile.mkdtemp(prefix="nexo-faults-pg-"))
        self.data = self.root / "data"
        self.as_postgres = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self):
        return f"postgres://nexo:nexo@127.0.0.1:{self.port}/nexo"

    def _run(self, *args):
        subprocess.run([*self.as_postgres, *args], check=True, capture_output=True, text=True, cwd=self.root)

    def init(self, copy_from):
        """initdb with `nexo` as its superuser, start, and load `copy_from`'s schema and rows."""
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "nexo", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        self.start()
        env = {**os.environ, "PGPASSWORD": copy_from["PASSWORD"]}
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "nexo", "nexo"],
            check=True,
            env=env,
        )
        dump = subprocess.run(
            [
                str(self.bin / "pg_dump"),
                "--no-owner",
                "--no-privileges",
                "-h",
                copy_from["HOST"],
                "-p",
                str(copy_from["PORT"]),
                "-U",
                copy_from["USER"],
                copy_from["NAME"],
            ],
            check=True,
            capture_output=True,
            env=env,
        ).stdout
        subprocess.run(
            [
                str(self.bin / "psql"),
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "nexo",
                "nexo",
            ],
            input=dump,
            check=True,
            capture_output=True,
            env=env,
        )

    def start(self):
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start"
        )

    def stop(self):
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self):
        with suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def using_database(url):
    """This process's Django connection on another PostgreSQL for the block (an `OwnPostgres`)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(
        HOST=parts.hostname, PORT=str(parts.port), NAME=parts.path.lstrip("/"), USER=parts.username
    )
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def reading(query, default=None):
    """`query()`, or `default` while the database is away (a scenario restarting it)."""
    try:
        return query()
    except DatabaseError:
        connection.close()
        return default
