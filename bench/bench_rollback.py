"""Rollback benchmark: a failed verification in qa → the rollback commit pushed → synced → healthy.

PostgreSQL, Redis, a real `manage.py rqworker` process, a bare Git repository on disk and the Argo CD
test server, whose syncs take a fixed time (`--sync-seconds`, default 2). qa requires an e2e result
from CI; each round promotes a good build into qa, then a build whose e2e failed: its soak fails at
the verdict and qa rolls back by itself to the good one. Measured per round, from the portal's own
timestamps: the failure → the rollback deployed and Healthy. The portal's share is that time minus
Argo CD's fixed sync time; the poll that notices the sync is done (ARGOCD_POLL_SECONDS, 5 s by
default, left as it is) is the portal's.

Target (the reference docs: develop/qa automatic rollback in under 2 minutes, with Argo CD's own
sync time excluded): the portal's share ≤ 10 s at p95.

    .venv/bin/python bench/bench_rollback.py [--rounds 5] [--sync-seconds 2]

Uses its own database (BENCH_DATABASE_URL, default postgres://nexo:nexo@127.0.0.1:5432/nexo_bench_rollback)
and Redis database 6 (BENCH_REDIS_URL). Exits 1 when the target is missed.
"""

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.database import ensure_database  # noqa: E402 - needs ROOT on the path

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://nexo:nexo@127.0.0.1:5432/nexo_bench_rollback")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
os.environ.update(DATABASE_URL=DATABASE_URL, REDIS_URL=REDIS_URL)
os.environ.setdefault("SECRET_KEY", f"bench-only-{secrets.token_hex(24)}")
os.environ.setdefault("ALLOWED_HOSTS", "localhost")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexo_portal.settings")

TARGET_SECONDS = 10.0


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def wait_for(promotion, states, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.1)
        promotion.refresh_from_db()
        if promotion.state in states:
            return promotion
        if time.monotonic() > deadline:
            raise SystemExit(f"promotion {promotion.pk} stuck in {promotion.state}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sync-seconds", type=float, default=2.0)
    options = parser.parse_args()

    ensure_database(DATABASE_URL)
    import django

    django.setup()
    from django.core.management import call_command
    from django_rq import get_connection

    from environments.defaults import ensure_default_environments
    from releases import transitions
    from releases.models import CheckResult, Hold, Promotion, PromotionKind, PromotionState
    from tests.factories import make_release, make_service
    from tests.gitops import GitOpsRemote
    from tests.servers.argocd import ArgoCDServer

    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    get_connection("default").flushdb()

    scratch_directory = tempfile.TemporaryDirectory(prefix="nexo-bench-rollback-")
    scratch = scratch_directory.name
    remote = GitOpsRemote(scratch)
    argocd = ArgoCDServer()
    environments = ensure_default_environments(verification_window=timedelta(0))
    qa = environments["qa"]
    qa.required_checks = ["e2e"]
    qa.rollback_verification_window = timedelta(0)
    qa.save()
    staging = environments["staging"]
    staging.auto_promote = False
    staging.save()
    service = make_service("nexo-be", team="backend-team")
    remote.add_service(service, environments.values(), tag="2026.01.1")
    for name in ("develop", "qa"):
        argocd.app(f"nexo-be-{name}", sync_seconds=options.sync_seconds)

    worker_env = {
        **os.environ,
        "GITOPS_REPO_URL": remote.url,
        "GITOPS_WORKDIR": str(Path(scratch) / "workdirs"),
        "ARGOCD_URL": argocd.url,
        "ARGOCD_TOKEN": argocd.token,
        "LOG_LEVEL": "WARNING",
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", *(["--with-scheduler"] if n == 0 else []), "default"],
            cwd=ROOT,
            env=worker_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        for n in range(2)
    ]
    totals, shares, into_commit = [], [], []
    try:
        build = 1
        for _round in range(options.rounds):
            Hold.objects.active().update(lifted_at=django.utils.timezone.now())  # each round starts clean
            good, bad = make_release(service, f"2026.02.{build}"), make_release(service, f"2026.02.{build + 1}")
            build += 2
            for release, passed in ((good, True), (bad, False)):
                CheckResult.objects.create(
                    release=release, environment=qa, name="e2e", passed=passed, reported_by="bench"
                )
                develop = transitions.request_promotion(release, environments["develop"], None, kind=PromotionKind.AUTO)
                wait_for(develop, {PromotionState.VERIFIED, PromotionState.FAILED})
                promotion = Promotion.objects.get(release=release, environment=qa)
                wait_for(promotion, {PromotionState.VERIFIED, PromotionState.FAILED, PromotionState.ROLLED_BACK})
            failed = Promotion.objects.get(release=bad, environment=qa)
            rollback = wait_for(
                Promotion.objects.get(rolls_back=failed, kind=PromotionKind.ROLLBACK),
                {PromotionState.VERIFIED, PromotionState.FAILED},
            )
            if rollback.state != PromotionState.VERIFIED or rollback.release != good:
                raise SystemExit(f"rollback {rollback.pk} ended {rollback.state}: {rollback.error}")
            total = (rollback.deployed_at - failed.finished_at).total_seconds()
            totals.append(total)
            shares.append(total - options.sync_seconds)
            into_commit.append((rollback.committed_at - failed.finished_at).total_seconds())
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        argocd.close()

    print(f"rollbacks measured:                        {len(totals)}")
    p50_total, p95_total = statistics.median(totals), percentile(totals, 0.95)
    print(f"failure → rollback deployed and Healthy:   p50 {p50_total:6.2f} s   p95 {p95_total:6.2f} s")
    print(f"  of which failure → rollback commit pushed: p50 {statistics.median(into_commit):6.2f} s")
    print(f"  Argo CD's own sync (the stand-in's fixed time): {options.sync_seconds:.2f} s")
    p95 = percentile(shares, 0.95)
    print(f"portal's share:                            p50 {statistics.median(shares):6.2f} s   p95 {p95:6.2f} s")
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    met = p95 <= TARGET_SECONDS
    print(f"Target: portal's share ≤ {TARGET_SECONDS:.0f} s at p95: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
