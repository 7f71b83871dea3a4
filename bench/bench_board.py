"""Benchmark of the promotion board: 200 services × 4 environments, 50,000 releases, in PostgreSQL.

    ./scripts/bench board            (or: python bench/bench_board.py [--requests N] [--rebuild])
    ./scripts/bench board --instructions    instructions per request, counted by callgrind (~3 min)

Builds the data set once with bulk_create in its own database (BENCH_DATABASE_URL, default
nexo_bench_board; kept between runs, --rebuild starts over), then
requests the board through Django's test client as an SRE who may approve, and prints the
query count, p50/p95/max and the portal's CPU time of the full page, of the full page after a
change (one deployment's health moves before each request, as Argo CD reports them), of the full
page with no rendered row kept (a process's first board; every row rendered), of the htmx refresh,
and of the refresh of an unchanged board (304 Not Modified, releases/state.py). Targets on an idle
2-core machine: ≤ 12 queries, p95 ≤ 150 ms and CPU p50 ≤ 60 ms for the full board, before and after
a change; p95 ≤ 5 ms and ≤ 1 KiB for an unchanged refresh. The board with no row kept has no target
of its own and is printed so that what the kept rows save can be read off (releases/board.py,
`row_key`). BENCH_SCALE=0.02 runs a miniature with fewer
services (the test suite does, so the benchmark keeps working); only scale 1 speaks to the target.
"""

import argparse
import itertools
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.database import ensure_database  # noqa: E402 - needs ROOT on the path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexo_portal.settings")
# Its own database, like the other benchmarks, so none of them wipes another's data set.
os.environ["DATABASE_URL"] = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://nexo:nexo@127.0.0.1:5432/nexo_bench_board"
)
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("ALLOWED_HOSTS", "testserver")
os.environ["SECURE_HTTPS"] = "0"

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
SERVICES = max(10, round(200 * SCALE))
RELEASES = SERVICES * 250
TEAMS = 10
QUERY_TARGET = 12  # the board issue's (#4) target; the filtered board adds the nav's waiting count
P95_TARGET_MS = 150
CPU_TARGET_MS = 60
UNCHANGED_P95_TARGET_MS = 5
UNCHANGED_BYTES_TARGET = 1024


def build(stdout):
    """200 services with 250 releases each: every release verified in develop, every 2nd in qa,
    every 10th in staging, every 25th in production; some promotions waiting, soaking or stopped."""
    from django.contrib.auth.models import Group, User
    from django.db import transaction
    from django.utils import timezone

    from environments.defaults import ensure_default_environments
    from releases.models import (
        Approval,
        ApprovalDecision,
        Deployment,
        Promotion,
        PromotionKind,
        PromotionState,
        Release,
        Service,
        StepStatus,
    )

    now = timezone.now()
    per_service = RELEASES // SERVICES
    reached = {"develop": 1, "qa": 2, "staging": 10, "production": 25}
    with transaction.atomic():
        environments = ensure_default_environments()
        teams = [Group.objects.get_or_create(name=f"team-{n:02d}")[0] for n in range(TEAMS)]
        sre = Group.objects.get_or_create(name="sre-team")[0]
        requester = User.objects.create_user("bench-requester")
        requester.groups.set(teams)
        approvers = [User.objects.create_user(f"bench-sre-{n}") for n in range(2)]
        for approver in approvers:
            approver.groups.add(sre)

        services = Service.objects.bulk_create(
            Service(
                name=f"bench-svc-{n:03d}", team=teams[n % TEAMS], image_repository=f"ghcr.io/nexo-org/bench-svc-{n:03d}"
            )
            for n in range(SERVICES)
        )
        releases = []
        start = now - timedelta(days=per_service)
        for service in services:
            builds = {}
            for index in range(per_service):
                moment = start + timedelta(days=index)
                month = (moment.year, moment.month)
                builds[month] = builds.get(month, 0) + 1
                version = f"{moment.year}.{moment.month:02d}.{builds[month]}"
                digest = f"{service.pk:08x}{index:08x}".ljust(64, "0")
                releases.append(
                    Release(
                        service=service,
                        version=version,
                        year=moment.year,
                        month=moment.month,
                        build=builds[month],
                        commit_sha=digest[:40],
                        image_digest=f"sha256:{digest}",
                        registered_at=moment,
                        changelog=f"- change {index} of {service.name}",
                    )
                )
        releases = Release.objects.bulk_create(releases, batch_size=5000)
        stdout.write(f"  {len(services)} services, {len(releases)} releases\n")

        promotions, deployments = [], []
        for offset, service in enumerate(services):
            history = releases[offset * per_service : (offset + 1) * per_service]
            for name, every in reached.items():
                environment = environments[name]
                # Leave the newest ones out of the later environments, so every column drifts a little.
                lag = {"develop": 0, "qa": 1 + offset % 3, "staging": 5 + offset % 7, "production": 20 + offset % 30}[
                    name
                ]
                for index, release in enumerate(history[: per_service - lag]):
                    if index % every:
                        continue
                    at = release.registered_at + timedelta(hours=2 + list(reached).index(name) * 6)
                    promotions.append(
                        Promotion(
                            release=release,
                            service=service,
                            environment=environment,
                            kind=PromotionKind.AUTO if name in ("develop", "qa") else PromotionKind.MANUAL,
                            state=PromotionState.VERIFIED,
                            requested_by=None if name in ("develop", "qa") else requester,
                            requested_via="pipeline" if name in ("develop", "qa") else "",
                            requested_at=at,
                            approved_at=at,
                            commit_started_at=at,
                            committed_at=at,
                            sync_started_at=at,
                            deployed_at=at,
                            verification_started_at=at,
                            verdict_at=at + timedelta(minutes=5),
                            finished_at=at + timedelta(minutes=5),
                            sync_status=StepStatus.PASSED,
                            verification_status=StepStatus.PASSED,
                            gitops_commit_sha=release.commit_sha,
                        )
                    )
        promotions = Promotion.objects.bulk_create(promotions, batch_size=5000)
        stdout.write(f"  {len(promotions)} verified promotions\n")

        by_place = {}
        for promotion in promotions:
            by_place.setdefault((promotion.service_id, promotion.environment_id), []).append(promotion)
        for place, history in by_place.items():
            for promotion, following in zip(history, [*history[1:], None], strict=True):
                deployments.append(
                    Deployment(
                        service_id=place[0],
                        environment_id=place[1],
                        release_id=promotion.release_id,
                        promotion=promotion,
                        gitops_commit_sha=promotion.gitops_commit_sha,
                        deployed_at=promotion.deployed_at,
                        replaced_at=following.deployed_at if following else None,
                        health="Healthy",
                        health_checked_at=now,
                    )
                )
        Deployment.objects.bulk_create(deployments, batch_size=5000)
        stdout.write(f"  {len(deployments)} deployments\n")

        # What a busy morning looks like: a fifth of production waiting for approvals, some soaking.
        production, staging = environments["production"], environments["staging"]
        waiting, approvals = [], []
        for offset, service in enumerate(services[::5]):
            newest_staging = by_place[(service.pk, staging.pk)][-1]
            waiting.append(
                Promotion(
                    release_id=newest_staging.release_id,
                    service=service,
                    environment=production,
                    state=PromotionState.AWAITING_APPROVAL,
                    requested_by=requester,
                    requested_at=now - timedelta(minutes=offset),
                )
            )
        waiting = Promotion.objects.bulk_create(waiting)
        for promotion in waiting[::2]:
            approvals.append(Approval(promotion=promotion, user=approvers[0], decision=ApprovalDecision.APPROVE))
        Approval.objects.bulk_create(approvals)
        soaking = []
        for service in services[1::10]:
            last = by_place[(service.pk, staging.pk)][-1]
            Promotion.objects.filter(pk=last.pk).update(
                state=PromotionState.VERIFYING,
                verification_started_at=now - timedelta(minutes=10),
                verdict_at=now + timedelta(minutes=20),
                finished_at=None,
                verification_status=StepStatus.RUNNING,
            )
            soaking.append(last.pk)
        stdout.write(f"  {len(waiting)} awaiting approval, {len(soaking)} soaking\n")


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(client, path, requests, headers=None, status=200, before=None):
    """`before`: called ahead of each request, outside its timing (a change, or forgetting kept rows)."""
    from django.db import connection

    headers = headers or {}
    before = before or (lambda: None)
    for _ in range(3):  # warm the template cache and the connection
        before()
        client.get(path, headers=headers)
    before()
    executed = []
    with connection.execute_wrapper(
        lambda execute, sql, params, many, context: executed.append(sql) or execute(sql, params, many, context)
    ):
        response = client.get(path, headers=headers)
    assert response.status_code == status, response.status_code
    timings, cpu = [], []
    for _ in range(requests):
        before()
        started, started_cpu = time.perf_counter(), time.process_time()
        response = client.get(path, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    # What goes over the wire: the status line, the headers and the body.
    head = f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in response.items()) + "\r\n"
    return {
        "queries": len(executed),
        "bytes": len(response.content) + len(head.encode()),
        "p50_ms": round(statistics.median(timings), 1),
        "p95_ms": round(percentile(timings, 0.95), 1),
        "max_ms": round(max(timings), 1),
        # The portal's own CPU per request (PostgreSQL's work is in another process): on a shared
        # machine it moves less than wall-clock time with what else runs.
        "cpu_p50_ms": round(statistics.median(cpu), 1),
        "requests": requests,
    }


def health_changes():
    """A change before each request, as Argo CD reports them: the next deployment's health moves."""
    from releases.models import Deployment

    deployments = itertools.cycle(Deployment.objects.current().values_list("pk", flat=True).order_by("?")[:500])
    healths = itertools.cycle(["Healthy", "Progressing", "Degraded"])

    def change():
        Deployment.objects.filter(pk=next(deployments)).update(health=next(healths))

    return change


def forget_rendered_rows():
    from releases.templatetags.board_cells import _forget_rendered_rows

    _forget_rendered_rows()


INSTRUCTION_VARIANTS = {"rows kept": "kept", "no row kept": "none"}


def count_requests(client, requests, variant):
    """The child process of --instructions: `requests` full boards, for callgrind to count."""
    before = forget_rendered_rows if variant == "none" else (lambda: None)
    for _ in range(3 + requests):  # three to warm up, as measure() does
        before()
        client.get("/")


def print_instructions(few=2, many=12):
    """Instructions per full board request, counted by callgrind: this machine's speed swings by half
    from one quarter of an hour to the next, an instruction count does not. Each variant runs twice,
    with `few` and `many` requests, and the difference is divided, so start-up cancels out."""
    callgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, sys.argv[0]]
    print(f"\nBoard: instructions per request, counted by callgrind ({many} and {few} requests, differenced)")
    for label, variant in INSTRUCTION_VARIANTS.items():
        runs = [
            subprocess.Popen(
                [*callgrind, "--count-variant", variant, "--count-requests", str(requests)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for requests in (few, many)
        ]
        counts = []
        for run in runs:
            _, errors = run.communicate()
            found = re.search(r"Collected : (\d+)", errors)
            if run.returncode or not found:
                raise SystemExit(f"callgrind counted nothing:\n{errors[-2000:]}")
            counts.append(int(found.group(1)))
        print(f"  {label:<14}{(counts[1] - counts[0]) / (many - few) / 1e6:8.1f} M instructions")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60, help="timed requests per variant (default 60)")
    parser.add_argument("--rebuild", action="store_true", help="drop the data set and build it again")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the instructions of a board request with callgrind (needs valgrind) instead of timing it",
    )
    parser.add_argument("--count-requests", type=int, help=argparse.SUPPRESS)  # the child of --instructions
    parser.add_argument("--count-variant", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.instructions and not shutil.which("valgrind"):
        raise SystemExit("--instructions needs valgrind (Debian package valgrind).")

    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.apps import apps
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections, connection
    from django.test import Client

    from releases.models import Release

    if options.count_requests is None:
        call_command("migrate", verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)  # pages link hashed static files
    if options.count_requests is None and (options.rebuild or Release.objects.count() != RELEASES):
        print(f"Building the data set in {connection.settings_dict['NAME']} (once; --rebuild starts over)…")
        call_command("flush", interactive=False, verbosity=0)
        started = time.perf_counter()
        build(sys.stdout)
        # What autovacuum does soon after a bulk load: statistics for the planner and the
        # visibility map that lets "builds behind" be counted from the index alone.
        with connection.cursor() as cursor:
            for model in apps.get_models():
                if model._meta.app_label in {"releases", "environments", "audit", "auth"}:
                    cursor.execute(f'VACUUM (ANALYZE) "{model._meta.db_table}"')
        print(f"  built in {time.perf_counter() - started:.0f} s")

    # The process as gunicorn runs it: nexo_portal/wsgi.py loads the URLconf and freezes the
    # start-up objects out of the garbage collector's full collections.
    import nexo_portal.wsgi  # noqa: F401

    # As behind a pooled or persistent connection: the bench times the page, not connecting.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    client = Client()
    client.force_login(User.objects.get(username="bench-sre-1"))
    if options.count_requests is not None:
        count_requests(client, options.count_requests, options.count_variant)
        return 0
    if options.instructions:
        print_instructions()
        return 0
    refresh = {"HX-Request": "true", "HX-Target": "board"}
    results = {
        "board": measure(client, "/", options.requests),
        # What an open board gets once something changed: Argo CD reported a health, one row moved.
        "board after a change": measure(client, "/", options.requests, before=health_changes()),
        # A process's first board, or one after every row changed: every row rendered.
        "board, no row kept": measure(client, "/", options.requests, before=forget_rendered_rows),
        "board refresh (htmx)": measure(client, "/", options.requests, refresh),
        "board filtered by team": measure(client, "/?team=team-03", options.requests),
    }
    # An open board refreshing while nothing changed: it sends the tag of what it shows. The tag
    # carries the minute (releases/state.py), so the run starts where the minute has time left.
    seconds_left = 60 - time.time() % 60
    if seconds_left < 5:
        time.sleep(seconds_left + 0.1)
    tag = client.get("/", headers=refresh)["ETag"]
    results["unchanged refresh (304)"] = measure(
        client, "/", options.requests, {**refresh, "If-None-Match": tag}, status=304
    )
    print(f"\nBoard: {RELEASES} releases, {SERVICES} services × 4 environments, {options.requests} requests each")
    print(f"{'variant':<26}{'queries':>8}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'CPU p50':>9}{'bytes':>9}")
    for name, figures in results.items():
        print(
            f"{name:<26}{figures['queries']:>8}{figures['p50_ms']:>9}{figures['p95_ms']:>9}{figures['max_ms']:>9}"
            f"{figures['cpu_p50_ms']:>9}{figures['bytes']:>9}"
        )
    print(
        f"load average while measuring: {' '.join(f'{load:.2f}' for load in os.getloadavg())} on {os.cpu_count()} cores"
    )
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())
    board, changed, unchanged = results["board"], results["board after a change"], results["unchanged refresh (304)"]
    checks = [
        (f"board ≤ {QUERY_TARGET} queries", board["queries"] <= QUERY_TARGET),
        (f"board p95 ≤ {P95_TARGET_MS} ms", board["p95_ms"] <= P95_TARGET_MS),
        (f"board CPU p50 ≤ {CPU_TARGET_MS} ms", board["cpu_p50_ms"] <= CPU_TARGET_MS),
        (f"board after a change p95 ≤ {P95_TARGET_MS} ms", changed["p95_ms"] <= P95_TARGET_MS),
        (f"board after a change CPU p50 ≤ {CPU_TARGET_MS} ms", changed["cpu_p50_ms"] <= CPU_TARGET_MS),
        (f"unchanged refresh p95 ≤ {UNCHANGED_P95_TARGET_MS} ms", unchanged["p95_ms"] <= UNCHANGED_P95_TARGET_MS),
        (f"unchanged refresh ≤ {UNCHANGED_BYTES_TARGET} bytes", unchanged["bytes"] <= UNCHANGED_BYTES_TARGET),
    ]
    print("\nTargets: (an idle 2-core machine; the load average above says how idle this one was)")
    for name, met in checks:
        print(f"  {name}: {'met' if met else 'NOT met'}")
    verdict = all(met for _, met in checks)
    if SCALE == 1:  # a miniature's figures are not worth keeping
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "board.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
