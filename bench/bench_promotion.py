"""Promotion benchmark: from the last approval to the GitOps commit being pushed, through the real stack.

PostgreSQL, Redis, a real `manage.py rqworker` process, a bare Git repository on disk and the Argo CD
test server answering at once. Side by side, in the same run and on the same repository, a bare
`git commit -a && git push` of the same change, taken in turns with the promotions. Prints p50/p95 of
both and their ratio.

Targets: p50 ratio ≤ 1.5, p95 ratio ≤ 3.

    .venv/bin/python bench/bench_promotion.py [--promotions 40]

Uses its own database (BENCH_DATABASE_URL, default postgres://nexo:nexo@127.0.0.1:5432/nexo_bench_promotion)
and Redis database 9 (BENCH_REDIS_URL). Exits 1 when a target is missed.
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

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://nexo:nexo@127.0.0.1:5432/nexo_bench_promotion")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ.update(DATABASE_URL=DATABASE_URL, REDIS_URL=REDIS_URL)
os.environ.setdefault("SECRET_KEY", f"bench-only-{secrets.token_hex(24)}")
os.environ.setdefault("ALLOWED_HOSTS", "localhost")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexo_portal.settings")

TARGET_P50_RATIO = 1.5
TARGET_P95_RATIO = 3.0


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


class ByHand:
    """The same change made by hand in a clone of the same repository: the tag line edited, then
    `git commit -a && git push` timed. It pushes to a branch of its own, so neither side's push is
    ever rejected by the other's and every run of both is a plain fast-forward."""

    branch = "by-hand"

    def __init__(self, bare_url, path, scratch):
        self.clone, self.path = Path(scratch) / "by-hand", path
        git("clone", "-q", bare_url, str(self.clone), cwd=scratch)
        git("config", "user.name", "Someone", cwd=self.clone)
        git("config", "user.email", "someone@nexo.invalid", cwd=self.clone)
        git("checkout", "-q", "-b", self.branch, cwd=self.clone)

    def commit_and_push(self, n):
        """Seconds taken by git commit -a && git push of the n-th change."""
        file = self.clone / self.path
        text = file.read_text()
        file.write_text(text.replace(text.split('tag: "', 1)[1].split('"', 1)[0], f"2099.01.{n + 1}", 1))
        started = time.perf_counter()
        git("commit", "-q", "-a", "-m", f"promote(nexo-be): production → 2099.01.{n + 1}", cwd=self.clone)
        git("push", "-q", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.clone)
        return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promotions", type=int, default=40)
    options = parser.parse_args()

    ensure_database(DATABASE_URL)
    import django

    django.setup()
    from django.core.management import call_command
    from django_rq import get_connection

    from environments.defaults import ensure_default_environments
    from releases import transitions
    from releases.models import Promotion, PromotionState
    from tests.factories import make_release, make_service, make_user
    from tests.gitops import GitOpsRemote
    from tests.servers.argocd import ArgoCDServer

    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    get_connection("default").flushdb()

    scratch_directory = tempfile.TemporaryDirectory(prefix="nexo-bench-promotion-")  # removed when the process ends
    scratch = scratch_directory.name
    remote = GitOpsRemote(scratch)
    argocd = ArgoCDServer()
    environments = ensure_default_environments(verification_window=timedelta(0))
    service = make_service("nexo-be", team="backend-team")
    remote.add_service(service, environments.values(), tag="2026.01.1")
    argocd.app("nexo-be-production", instant=True)
    rita = make_user("rita", groups=["backend-team"])
    sam, lead = make_user("sam", groups=["sre-team"]), make_user("lead", groups=["platform-leads"])

    worker_env = {
        **os.environ,
        "GITOPS_REPO_URL": remote.url,
        "GITOPS_WORKDIR": str(Path(scratch) / "workdirs"),
        "ARGOCD_URL": argocd.url,
        "ARGOCD_TOKEN": argocd.token,
        "ARGOCD_POLL_SECONDS": "0.01",
        "LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "--with-scheduler", "default"],
        cwd=ROOT,
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    by_hand = ByHand(remote.url, service.values_path(environments["production"]), scratch)
    try:
        # One promotion, then the same change by hand, and again: both sides meet the machine as it
        # is at that moment, so a slower stretch of the run cannot favour either.
        portal, to_committing, baseline = [], [], []
        for n in range(options.promotions + 1):
            release = make_release(service, f"2026.02.{n + 1}")
            for name in ("develop", "qa", "staging"):
                Promotion.objects.create(release=release, environment=environments[name], state=PromotionState.VERIFIED)
            promotion = transitions.request_promotion(release, environments["production"], rita)
            transitions.approve(promotion, sam)
            transitions.approve(promotion, lead)  # the last approval: the clock starts when it is saved
            deadline = time.monotonic() + 60
            while True:
                # Asked less often than a push takes, so the bench's own queries do not compete with
                # the step it measures (the times come from the promotion, not from this loop).
                time.sleep(0.05)
                promotion.refresh_from_db()
                if promotion.state in (PromotionState.VERIFIED, PromotionState.FAILED):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"promotion {promotion.pk} stuck in {promotion.state}")
            if promotion.state != PromotionState.VERIFIED:
                raise SystemExit(f"promotion {promotion.pk} failed: {promotion.error}")
            by_hand_seconds = by_hand.commit_and_push(n)
            if n:  # the first of each warms the worker's working copy and the clone
                portal.append((promotion.committed_at - promotion.approved_at).total_seconds())
                to_committing.append((promotion.commit_started_at - promotion.approved_at).total_seconds())
                baseline.append(by_hand_seconds)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        argocd.close()

    p50, p95 = statistics.median(portal), percentile(portal, 0.95)
    b50, b95 = statistics.median(baseline), percentile(baseline, 0.95)
    print(f"promotions measured:            {len(portal)}")
    print(f"portal, last approval → pushed: p50 {p50 * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms")
    committing = statistics.median(to_committing)
    print(
        f"  of which, p50: approval → values file changed and 'committing' saved (git writes the commit "
        f"meanwhile) {committing * 1000:6.1f} ms; → pushed {(p50 - committing) * 1000:6.1f} ms"
    )
    print(f"bare git commit -a && git push: p50 {b50 * 1000:7.1f} ms   p95 {b95 * 1000:7.1f} ms")
    print(
        f"ratio:                          p50 {p50 / b50:7.2f}      p95 {p95 / b95:7.2f}   "
        f"(targets ≤ {TARGET_P50_RATIO} and ≤ {TARGET_P95_RATIO})"
    )
    met = p50 / b50 <= TARGET_P50_RATIO and p95 / b95 <= TARGET_P95_RATIO
    print("targets met" if met else "TARGET MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
