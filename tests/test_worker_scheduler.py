"""RQ's scheduler, run by a real `manage.py rqworker --with-scheduler` process, ends with its worker
(releases/worker.py: stop_children_with_this_process) even when the worker is SIGKILLed."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.faults import Portal, database_url, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SCHEDULER_LOCK = "rq:scheduler-lock:default"


def children(pid):
    """The pids of the processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid …": comm may hold spaces, so read after its closing parenthesis.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it ended while the directory was read
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def schedulers(pid):
    """The children of `pid` that run `manage.py rqworker` (RQ forks its scheduler from the worker)."""
    found = []
    for child in children(pid):
        try:
            if b"rqworker" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads processes from /proc (Linux)")
def test_a_worker_killed_with_sigkill_takes_its_scheduler_with_it(redis_connection, tmp_path):
    portal = Portal(
        tmp_path,
        {"DATABASE_URL": database_url(connection.settings_dict), "REDIS_URL": settings.RQ_QUEUES["default"]["URL"]},
    )
    try:
        portal.start_worker(0)
        worker = portal.workers[0]
        # The worker also runs `file` and `git version` as it starts: its scheduler is the child
        # that runs the worker's own command line.
        wait_until(lambda: schedulers(worker.pid), 60, f"the worker's scheduler process\n{portal.logs()}")
        [scheduler] = schedulers(worker.pid)
        wait_until(lambda: redis_connection.exists(SCHEDULER_LOCK), 30, "the scheduler's lock taken")

        worker.send_signal(signal.SIGKILL)
        worker.wait()

        wait_until(lambda: not alive(scheduler), 15, f"the scheduler ended with its worker\n{portal.logs()}")
        # It stopped as RQ's scheduler stops on SIGTERM: its lock released for another worker's.
        assert not redis_connection.exists(SCHEDULER_LOCK)
    finally:
        portal.stop()


GRANDCHILD = """
import os, time
import django
django.setup()
from releases.worker import stop_children_with_this_process
stop_children_with_this_process()
read, write = os.pipe()
child = os.fork()
if child == 0:
    grandchild = os.fork()
    if grandchild == 0:
        time.sleep(0.5)
        os.write(write, b"the grandchild lived")
        os._exit(0)
    os.waitpid(grandchild, 0)
    os._exit(0)
os.close(write)
os.waitpid(child, 0)
print(os.read(read, 100).decode() or "the grandchild died")
"""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="Linux's parent-death signal")
def test_only_the_workers_own_children_are_tied_to_it():
    """A process a child forks is its child's business: the hook must not stop it."""
    result = subprocess.run(
        [sys.executable, "-c", GRANDCHILD], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "the grandchild lived"
