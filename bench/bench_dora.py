"""DORA report benchmark: 100 services, 500,000 deployments over two years, on PostgreSQL.

Target: a one-year production report (the whole page: figures, bands, weekly trend,
per-service table) in at most 500 ms on the project's 2-core machine.

    .venv/bin/python bench/bench_dora.py            # loads the data once, then times the report
    .venv/bin/python bench/bench_dora.py --reload   # drops and regenerates the data first

It uses its own database (BENCH_DATABASE_URL, default postgres://nexo:nexo@127.0.0.1:5432/nexo_bench_dora),
created if missing, and keeps the generated data between runs. Prints the figures; exits 1 when
the median is over the target. BENCH_SCALE=0.01 runs a miniature (the test suite does, so the
benchmark keeps working); only figures at scale 1 speak to the target.
"""

import argparse
import io
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.database import ensure_database  # noqa: E402 - needs ROOT on the path

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://nexo:nexo@127.0.0.1:5432/nexo_bench_dora")
os.environ["DATABASE_URL"] = DATABASE_URL
os.environ.setdefault("SECRET_KEY", f"bench-only-{secrets.token_hex(24)}")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost")
os.environ.setdefault("SECURE_HTTPS", "0")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexo_portal.settings")

SERVICES = 100
TEAMS = 10
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
DEPLOYMENTS_PER_SERVICE = max(20, int(5_000 * SCALE))
YEARS = 2
TARGET_MS = 500
RUNS = 15


def generate(now, environments, services):
    """Rows for releases, deployments and incidents, as the portal would have recorded them."""
    rng = random.Random(2026)
    start = now - timedelta(days=365 * YEARS)
    releases, incidents = [], []
    release_id = deployment_id = incident_id = 0
    per_place = {}

    def deploy(service_id, environment, release, when, is_rollback=False):
        nonlocal deployment_id
        deployment_id += 1
        row = {
            "id": deployment_id,
            "service": service_id,
            "environment": environment,
            "release": release["id"],
            "deployed_at": when,
            "is_rollback": is_rollback,
            "committed_at": release["committed_at"],
            "is_hotfix": release["is_hotfix"],
        }
        per_place.setdefault((service_id, environment), []).append(row)
        return row

    def new_release(service_id, when, counters, is_hotfix=False, fixes=None):
        nonlocal release_id
        release_id += 1
        key = (when.year, when.month)
        counters[key] = counters.get(key, 0) + 1
        metadata = "hotfix" if is_hotfix else ""
        version = f"{when.year}.{when.month:02d}.{counters[key]}" + (f"-{metadata}" if metadata else "")
        release = {
            "id": release_id,
            "service": service_id,
            "version": version,
            "year": when.year,
            "month": when.month,
            "build": counters[key],
            "metadata": metadata,
            "commit_sha": f"{release_id:040x}",
            "committed_at": when - timedelta(hours=rng.uniform(0.2, 72)),
            "image_digest": "sha256:" + f"{release_id:064x}",
            "is_hotfix": is_hotfix,
            "fixes": fixes,
            "registered_at": when,
        }
        releases.append(release)
        return release

    # (environment, chance of going on from the one before, hours after registration)
    pipeline = [
        (environments["develop"], 1.0, 0.2),
        (environments["qa"], 0.7, 0.7),
        (environments["staging"], 0.6, 24),
        (environments["production"], 0.7, 60),
    ]
    production = environments["production"]
    for service_id in services:
        counters, made, when = {}, 0, start
        running = {}
        # About 2.45 deployments per release; a few more releases than needed so the target is reached.
        step = (365 * YEARS * 24) / (DEPLOYMENTS_PER_SERVICE / 2.3)
        while made < DEPLOYMENTS_PER_SERVICE:
            when += timedelta(hours=rng.expovariate(1 / step))
            if when >= now:
                break
            release = new_release(service_id, when, counters)
            for environment, chance, delay_hours in pipeline:
                if made >= DEPLOYMENTS_PER_SERVICE or rng.random() > chance:
                    break
                at = when + timedelta(hours=delay_hours * rng.uniform(0.5, 1.5))
                if at >= now:
                    break
                previous = running.get(environment)
                deploy(service_id, environment, release, at)
                made += 1
                running[environment] = release
                if environment == production and previous is not None and made < DEPLOYMENTS_PER_SERVICE:
                    roll = rng.random()
                    if roll < 0.04:
                        back = deploy(
                            service_id, environment, previous, at + timedelta(minutes=rng.uniform(10, 600)), True
                        )
                        running[environment] = previous
                        made += 1
                        back["takes_out"] = release
                    elif roll < 0.07:
                        fix_at = at + timedelta(hours=rng.uniform(1, 30))
                        hotfix = new_release(service_id, fix_at - timedelta(minutes=30), counters, True, release["id"])
                        if fix_at < now:
                            deploy(service_id, environment, hotfix, fix_at)["fixes"] = release
                            running[environment] = hotfix
                            made += 1
                    elif roll < 0.09:
                        incident_id += 1
                        started = at + timedelta(minutes=rng.uniform(5, 240))
                        resolved = started + timedelta(minutes=rng.expovariate(1 / 90))
                        incidents.append(
                            {
                                "id": incident_id,
                                "service": service_id,
                                "environment": environment,
                                "title": "PagerDuty incident",
                                "source": "pagerduty",
                                "started_at": started,
                                "resolved_at": resolved if resolved < now else None,
                                "caused_by_release": release["id"],
                                "fixed_by": None,
                            }
                        )
    # Timelines: replaced_at, is_change, and the deployments the incidents point at.
    change_of = {}
    for rows in per_place.values():
        rows.sort(key=lambda row: (row["deployed_at"], row["id"]))
        for index, row in enumerate(rows):
            following = rows[index + 1] if index + 1 < len(rows) else None
            row["replaced_at"] = following["deployed_at"] if following else None
            before = rows[index - 1] if index else None
            row["is_change"] = not row["is_rollback"] and (before is None or before["release"] != row["release"])
            if row["is_change"]:
                change_of[(row["service"], row["environment"], row["release"])] = row
            if row.get("takes_out") or row.get("fixes"):
                failed = change_of.get(
                    (row["service"], row["environment"], (row.get("takes_out") or row["fixes"])["id"])
                )
                if failed is not None:
                    incident_id += 1
                    source = "rollback" if row["is_rollback"] else "hotfix"
                    incidents.append(
                        {
                            "id": incident_id,
                            "service": row["service"],
                            "environment": row["environment"],
                            "title": f"{source} incident",
                            "source": source,
                            "started_at": failed["deployed_at"],
                            "resolved_at": row["deployed_at"],
                            "caused_by": failed["id"],
                            "fixed_by": row["id"],
                        }
                    )
    for incident in incidents:
        if "caused_by_release" in incident:
            failed = change_of.get((incident["service"], incident["environment"], incident.pop("caused_by_release")))
            incident["caused_by"] = failed["id"] if failed else None
    all_deployments = [row for rows in per_place.values() for row in rows]
    return releases, all_deployments, incidents


def copy_rows(cursor, table, columns, rows):
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join("\\N" if value is None else str(value) for value in row) + "\n")
    buffer.seek(0)
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        while chunk := buffer.read(1 << 20):
            copy.write(chunk)


def load(reload):
    from django.contrib.auth.models import Group
    from django.db import connection, transaction
    from django.utils import timezone

    from environments.defaults import ensure_default_environments
    from releases.models import Deployment, Service

    if not reload and Deployment.objects.count() >= 0.99 * SERVICES * DEPLOYMENTS_PER_SERVICE:
        return
    started = time.perf_counter()
    with transaction.atomic():
        with connection.cursor() as cursor:
            # The benchmark's own database: start from empty tables, fast.
            cursor.execute(
                "TRUNCATE releases_incident, releases_deployment, releases_release, releases_service CASCADE"
            )
        environments = {name: env.pk for name, env in ensure_default_environments().items()}
        teams = [Group.objects.get_or_create(name=f"team-{n:02d}")[0] for n in range(TEAMS)]
        services = [
            Service.objects.create(
                name=f"svc-{n:03d}", image_repository=f"ghcr.io/bench/svc-{n:03d}", team=teams[n % TEAMS]
            ).pk
            for n in range(SERVICES)
        ]
        releases, deployments, incidents = generate(timezone.now(), environments, services)
        with connection.cursor() as cursor:
            raw = cursor.cursor
            copy_rows(
                raw,
                "releases_release",
                [
                    "id",
                    "service_id",
                    "version",
                    "year",
                    "month",
                    "build",
                    "metadata",
                    "commit_sha",
                    "committed_at",
                    "image_digest",
                    "changelog",
                    "is_hotfix",
                    "fixes_id",
                    "registered_by",
                    "registered_at",
                    "is_imported",
                ],
                (
                    [
                        r["id"],
                        r["service"],
                        r["version"],
                        r["year"],
                        r["month"],
                        r["build"],
                        r["metadata"],
                        r["commit_sha"],
                        r["committed_at"].isoformat(),
                        r["image_digest"],
                        "",
                        r["is_hotfix"],
                        r["fixes"],
                        "bench",
                        r["registered_at"].isoformat(),
                        False,
                    ]
                    for r in releases
                ),
            )
            copy_rows(
                raw,
                "releases_deployment",
                [
                    "id",
                    "service_id",
                    "environment_id",
                    "release_id",
                    "source",
                    "is_rollback",
                    "is_change",
                    "release_committed_at",
                    "release_is_hotfix",
                    "gitops_commit_sha",
                    "deployed_at",
                    "replaced_at",
                    "health",
                    "drifted_tag",
                ],
                (
                    [
                        d["id"],
                        d["service"],
                        d["environment"],
                        d["release"],
                        "portal",
                        d["is_rollback"],
                        d["is_change"],
                        d["committed_at"].isoformat(),
                        d["is_hotfix"],
                        "",
                        d["deployed_at"].isoformat(),
                        d["replaced_at"].isoformat() if d["replaced_at"] else None,
                        "Healthy",
                        "",
                    ]
                    for d in deployments
                ),
            )
            copy_rows(
                raw,
                "releases_incident",
                [
                    "id",
                    "service_id",
                    "environment_id",
                    "title",
                    "severity",
                    "source",
                    "started_at",
                    "resolved_at",
                    "caused_by_id",
                    "fixed_by_id",
                    "external_id",
                    "external_url",
                    "created_at",
                ],
                (
                    [
                        i["id"],
                        i["service"],
                        i["environment"],
                        i["title"],
                        "high",
                        i["source"],
                        i["started_at"].isoformat(),
                        i["resolved_at"].isoformat() if i["resolved_at"] else None,
                        i["caused_by"],
                        i["fixed_by"],
                        "",
                        "",
                        i["started_at"].isoformat(),
                    ]
                    for i in incidents
                ),
            )
            for table in ("releases_release", "releases_deployment", "releases_incident"):
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"Loaded {len(releases):,} releases, {len(deployments):,} deployments, {len(incidents):,} incidents "
        f"in {time.perf_counter() - started:.0f} s"
    )


def timed(label, function, runs=RUNS):
    function()  # warm the caches once, as a page that is read every day would be
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    median = statistics.median(samples)
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    print(f"{label:<58} median {median:7.1f} ms   p95 {p95:7.1f} ms   min {samples[0]:7.1f} ms")
    return median


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reload", action="store_true", help="regenerate the data even if it is there")
    arguments = parser.parse_args()

    ensure_database(DATABASE_URL)
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    from releases.dora import metrics as dora
    from releases.models import Deployment, Incident, Service

    call_command("migrate", verbosity=0)
    load(arguments.reload)
    # The page is rendered as in production: hashed static files, collected once.
    static_root = tempfile.TemporaryDirectory(prefix="nexo-bench-static-")
    settings.STATIC_ROOT = static_root.name  # removed when the process ends
    call_command("collectstatic", interactive=False, verbosity=0)

    production = dora.default_environment()
    end = timezone.localdate()
    start = end - timedelta(days=364)
    year = Deployment.objects.filter(environment=production, deployed_at__date__gte=start)
    print(
        f"Data: {Service.objects.count()} services, {Deployment.objects.count():,} deployments "
        f"({year.count():,} in production in the last year), {Incident.objects.count():,} incidents"
    )

    def production_report(**options):
        return lambda: dora.report(environment=production, start=start, end=end, **options)

    figures = dora.report(environment=production, start=start, end=end).overall
    print(
        f"One-year production figures: {figures.change_deployments:,} change deployments, "
        f"lead time median {figures.lead_time_median / 3600:.1f} h, change failure rate "
        f"{figures.change_failure_rate:.1%}, recovery median {figures.recovery_median / 3600:.1f} h, "
        f"rework {figures.rework_rate:.1%}, services per frequency band {figures.frequency_bands}"
    )

    user, _ = User.objects.get_or_create(username="bench-reader")
    client = Client()
    client.force_login(user)
    page_url = f"/dora/?environment={production.name}&start={start}&end={end}&interval=weekly"
    assert client.get(page_url).status_code == 200

    timed("report, all services, interval=all (API)", production_report())
    timed("report, all services, weekly trend", production_report(interval=dora.Interval.WEEKLY))
    timed(
        "report, one team, monthly trend",
        production_report(team=Group.objects.get(name="team-03"), interval=dora.Interval.MONTHLY),
    )
    timed(
        "report, one service, weekly trend",
        production_report(service=Service.objects.get(name="svc-042"), interval=dora.Interval.WEEKLY),
    )
    page = timed("DORA page, all services, weekly trend (HTTP, rendered)", lambda: client.get(page_url))
    api = timed(
        "GET /api/v1/dora/ one year, weekly",
        lambda: client.get(f"/api/v1/dora/?start={start}&end={end}&interval=weekly"),
    )

    worst = max(page, api)
    verdict = "within" if worst <= TARGET_MS else "OVER"
    print(f"Target: one-year production report <= {TARGET_MS} ms: {verdict} target (slowest median {worst:.0f} ms)")
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
