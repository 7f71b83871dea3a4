"""manage.py reconcile [--loop]: deliver the pipeline steps that are owed and flag GitOps drift.

Run exactly one `reconcile --loop` beside the workers (docs/deploy.md). It needs no RQ to run: an
outage of Redis or PostgreSQL is waited out, and the first round after it delivers what is owed.
Any other error of a round is logged and the next round runs: a restarted process would meet it again.
"""

import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections
from redis.exceptions import RedisError

from releases.reconciler import reconcile

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Deliver the steps owed (killed workers, lost jobs), flag GitOps drift, refresh the Argo CD health the "
        "board shows, verify the audit chain."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--loop", action="store_true", help="Run every RECONCILE_SECONDS until stopped, riding out outages."
        )

    def handle(self, *args, loop=False, **options):
        while True:
            try:
                result = reconcile()
            except (DatabaseError, RedisError) as error:
                if not loop:
                    raise
                self.stderr.write(f"Reconciler: {error}; trying again in {settings.RECONCILE_SECONDS} s")
            except Exception:
                if not loop:
                    raise
                logger.exception("Reconciler: the round failed; trying again in %s s", settings.RECONCILE_SECONDS)
            else:
                keys = ("recovered", "notices", "drifted", "far_behind", "slo_breaches")
                if any(result[key] for key in keys) or not loop:
                    self.stdout.write(
                        f"Reconciler: steps on their way again for promotions {result['recovered'] or 'none'}; "
                        f"notices handed to RQ again: {result['notices'] or 'none'}; "
                        f"drift in deployments {result['drifted'] or 'none'}; "
                        f"far behind the first environment: {result['far_behind'] or 'none'}; "
                        f"past their SLO target: promotions {result['slo_breaches'] or 'none'}"
                    )
            finally:
                close_old_connections()
            if not loop:
                return
            time.sleep(settings.RECONCILE_SECONDS)
