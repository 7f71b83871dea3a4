"""API benchmark: build registrations per second under gunicorn, next to /healthz in the same run.

gunicorn (4 sync workers, as docs/deploy.md runs it) serves the portal on PostgreSQL and Redis; wrk
posts registrations of new builds, each with its own commit and digest, spread over 50 services
that deploy themselves into develop on registration (the demo's policy), then asks /healthz, the
cheapest request the portal answers. The ratio of the two says what a registration costs on this
machine, whatever its speed.

Target (#12): three times the registrations per second of the portal as it was when the target was
set (commit 7bb84f5, 38 queries per registration), on the same machine. `--against 7bb84f5` measures
exactly that: it checks that commit out into a temporary worktree and runs the two portals in turns
(`--rounds`), each with its own database, since this machine's speed moves by 2× within an hour;
the target is met when the median of this code's rounds is at least 3× the median of the other's.
Alone, the benchmark prints the ratio to /healthz, for comparing runs on other days.

    .venv/bin/python bench/bench_api.py [--seconds 10] [--connections 8] [--workers 4]
    .venv/bin/python bench/bench_api.py --against 7bb84f5 [--rounds 3]

Uses its own database (BENCH_DATABASE_URL, default postgres://nexo:nexo@127.0.0.1:5432/nexo_bench_api;
the other code's gets the suffix _against) and Redis database (BENCH_REDIS_URL, default 7). Needs
wrk (Debian package wrk). With --against, exits 1 when the target is missed.
"""

import argparse
import inspect
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.database import ensure_database  # noqa: E402 - needs ROOT on the path

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://nexo:nexo@127.0.0.1:5432/nexo_bench_api")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
os.environ.update(DATABASE_URL=DATABASE_URL, REDIS_URL=REDIS_URL)
os.environ.setdefault("SECRET_KEY", f"bench-only-{secrets.token_hex(24)}")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexo_portal.settings")
SERVICES = 50
TARGET_SPEED_UP = 3

# Each request registers a new build: a commit and a digest no other request sends.
REGISTER_SCRIPT = """
local services = %(services)d
local counter = 0
-- Set by setup() in each thread's own Lua state; a `local` here would hide it and give every
-- thread the same builds, half of them retries of the other thread's.
thread_id = 0
setup = function(thread) thread:set("thread_id", math.random(1, 2^30)) end
request = function()
  counter = counter + 1
  local sha = string.format("%%08x%%08x%%024x", thread_id, counter, 0)
  local digest = "sha256:" .. string.format("%%08x%%08x%%048x", thread_id, counter, 0)
  local body = string.format(
    '{"service": "bench-%%d", "commit_sha": "%%s", "committed_at": "2026-01-01T00:00:00Z", "image_digest": "%%s"}',
    counter %% services, sha, digest)
  return wrk.format("POST", "/api/v1/releases/", {
    ["Authorization"] = "Bearer %(token)s", ["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("statuses non-2xx/3xx: %%d\\n", summary.errors.status))
end
"""


def prepare():
    """A fresh data set: the default environments, the services, a CI token with the register scope."""
    import django

    django.setup()
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    from environments.defaults import ensure_default_environments
    from nexo_portal.models import ApiToken
    from releases.models import Service

    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    # Redis too: the queue and the jobs of the run before (the other side's, the ids flush restarts)
    # are not this run's.
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    ensure_default_environments()
    team = Group.objects.create(name="bench-team")
    for number in range(SERVICES):
        Service.objects.create(name=f"bench-{number}", team=team, image_repository=f"ghcr.io/bench/{number}")
    # The same benchmark runs on older revisions (--against): before 802db62 a token with no services
    # listed was one for all services, and issue() knew no all_services.
    everywhere = (
        {"all_services": True} if "all_services" in inspect.signature(ApiToken.objects.issue).parameters else {}
    )
    _, plain = ApiToken.objects.issue(name="bench-ci", scopes=["register"], **everywhere)
    return plain


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(port, workers):
    environment = {
        **os.environ,
        "LOG_LEVEL": "WARNING",
        "SECURE_HTTPS": "0",
        "API_TOKEN_THROTTLE_RATE": "1000000/minute",
        # wrk asks for 127.0.0.1: whatever hosts the caller allowed (scripts/bench: testserver), a
        # 400 for the Host header would be measured instead of the portal.
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    environment.pop("DEBUG", None)
    process = subprocess.Popen(
        # As docs/deploy.md runs it, but for the address.
        [
            sys.executable,
            "-m",
            "gunicorn",
            "nexo_portal.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--timeout",
            "60",
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                time.sleep(1)  # every worker booted, not only the first
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"gunicorn did not start:\n{process.stderr.read()[-2000:]}")


def wrk(url, seconds, connections, script=None):
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        command += ["-s", script]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE).group(1)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE).group(1)
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return rate, p50, p99, int(failed.group(1)) if failed else 0


def warm_up(url, connections, script=None, patience=120):
    """Ask until wrk counts answers: on a busy machine gunicorn's workers take seconds to boot, and a
    worker's first registration seconds more (imports, connections), longer than a short run."""
    deadline = time.monotonic() + patience
    while wrk(url, 2, connections, script)[0] == 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"gunicorn answered nothing on {url} for {patience} s.")


def measure(options):
    """One run on this checkout: (healthz, registrations) as wrk measured them, and the rows written."""
    ensure_database(DATABASE_URL)
    token = prepare()
    from django.db import connection

    from releases.models import Promotion, Release

    connection.close()
    port = free_port()
    server = start_gunicorn(port, options.workers)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
            script.write(REGISTER_SCRIPT % {"services": SERVICES, "token": token})
            script.flush()
            warm_up(f"http://127.0.0.1:{port}/healthz", options.connections)
            warm_up(f"http://127.0.0.1:{port}", options.connections, script.name)
            health = wrk(f"http://127.0.0.1:{port}/healthz", options.seconds, options.connections)
            register = wrk(f"http://127.0.0.1:{port}", options.seconds, options.connections, script.name)
    finally:
        server.terminate()  # gunicorn's graceful stop waits up to its 30 s timeout for busy workers
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if not health[0] or not register[0]:
        raise SystemExit(
            f"wrk measured nothing (healthz {health[0]}/s, registrations {register[0]}/s): is the machine busy?"
        )
    return health, register, Release.objects.count(), Promotion.objects.count()


def report(options, health, register, releases, promotions):
    load = os.getloadavg()
    print(f"gunicorn: {options.workers} workers; wrk: {options.connections} connections, {options.seconds} s per run")
    print(f"GET /healthz:              {health[0]:8.1f} requests/s   p50 {health[1]:>8}   p99 {health[2]:>8}")
    print(
        f"POST /api/v1/releases/:    {register[0]:8.1f} requests/s   p50 {register[1]:>8}   p99 {register[2]:>8}"
        f"   ({register[3]} answered other than 2xx)"
    )
    print(f"registered: {releases} releases, {promotions} develop promotions started")
    print(f"ratio registrations / healthz: {register[0] / health[0]:.3f}")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def against(options):
    """This checkout and `options.against` in turns; 0 when this one registers ≥ 3× as many per second."""
    with tempfile.TemporaryDirectory(prefix="bench-api-") as scratch:
        tree = Path(scratch) / "against"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", tree, options.against], cwd=ROOT, check=True)
        try:
            # The other code is measured by this very benchmark, copied over whatever it had then.
            for name in ("bench_api.py", "database.py"):
                shutil.copy(ROOT / "bench" / name, tree / "bench" / name)
            sides = {"this checkout": (ROOT, DATABASE_URL), options.against: (tree, f"{DATABASE_URL}_against")}
            rounds = {side: [] for side in sides}
            for number in range(1, options.rounds + 1):
                for side, (root, database_url) in sides.items():
                    figures = run_side(root, database_url, options)
                    rounds[side].append(figures)
                    print(
                        f"round {number}, {side:>13}: {figures['registrations']:7.1f} registrations/s "
                        f"({figures['failed']} not 2xx), healthz {figures['healthz']:7.1f}/s, "
                        f"load average {figures['load']:.2f}",
                        flush=True,
                    )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT, check=False)

    def median(side, key):
        values = sorted(figures[key] for figures in rounds[side])
        return values[len(values) // 2]

    this, other = median("this checkout", "registrations"), median(options.against, "registrations")
    failed = sum(figures["failed"] for side in rounds for figures in rounds[side])
    print(f"median registrations/s: this checkout {this:.1f}, {options.against} {other:.1f}: {this / other:.2f}×")
    met = this >= TARGET_SPEED_UP * other and failed == 0
    print(
        f"Target: ≥ {TARGET_SPEED_UP}× {options.against}, every registration answered 2xx: {'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


def run_side(root, database_url, options):
    command = [sys.executable, root / "bench" / "bench_api.py", "--json"]
    command += ["--seconds", str(options.seconds), "--connections", str(options.connections)]
    command += ["--workers", str(options.workers)]
    environment = {**os.environ, "BENCH_DATABASE_URL": database_url}
    output = subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True)
    if output.returncode:
        raise SystemExit(f"The benchmark failed in {root}:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--against", metavar="REVISION", help="measure this checkout and REVISION in turns")
    parser.add_argument("--rounds", type=int, default=3, help="with --against: runs of each (default 3)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one run, for --against
    options = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian package wrk); ./scripts/bench api installs it.")
    if options.against:
        return against(options)

    health, register, releases, promotions = measure(options)
    if options.json:
        figures = {"healthz": health[0], "registrations": register[0], "failed": register[3]}
        print(json.dumps({**figures, "load": os.getloadavg()[0]}))
    else:
        report(options, health, register, releases, promotions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
