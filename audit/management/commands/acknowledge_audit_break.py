"""Acknowledge a break of the audit chain once it was investigated, so that the chain is verified,
alerted on and checkpointed again from there: what was found stays in the log, and so does who
acknowledged it and why, as a sealed event that later verifications read (audit/log.py)."""

import hashlib

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from audit import checkpoints
from audit import log as audit
from audit.models import AuditAction


def confirmation(report):
    """A short code for exactly the problems of `report`, for the operator to repeat."""
    return hashlib.sha256("\n".join(sorted(report.fingerprints)).encode()).hexdigest()[:12]


class Command(BaseCommand):
    help = (
        "Acknowledge the problems the audit chain's verification finds now, after an investigation: recorded as an "
        "audit event naming who and why. Later verifications leave exactly those out while what they concern stays "
        "as it is, report anything else, and checkpoints are taken again. Run once to see the problems and the code "
        "to confirm them with."
    )

    def add_arguments(self, parser):
        parser.add_argument("--by", required=True, metavar="USERNAME", help="The staff account acknowledging it.")
        parser.add_argument("--reason", required=True, help="What the investigation found, for the audit log.")
        parser.add_argument("--confirm", default="", metavar="CODE", help="The code a first run printed.")

    def handle(self, *args, by, reason, confirm, **options):
        user = get_user_model().objects.filter(username=by, is_active=True, is_staff=True).first()
        if user is None:
            raise CommandError(
                f"{by} is not an active staff account: a break is acknowledged by a person on the staff."
            )
        if not reason.strip():
            raise CommandError("Say in --reason what the investigation found: it goes into the audit log.")
        report, witness_error = checkpoints.verify(checkpoints.configured_witness())
        if witness_error:
            raise CommandError(f"{witness_error}. Acknowledge a break only once it was verified against the witness.")
        if report.ok:
            self.stdout.write(f"Nothing to acknowledge. {report.summary()}")
            return
        problems = 1 + len(report.later) + report.more
        if len(report.fingerprints) != problems:
            raise CommandError(
                f"{report.summary()}\nThe chain breaks in more places than one acknowledgment can name "
                f"({audit.MAX_LATER_PROBLEMS + 1}): investigate from the database."
            )
        code = confirmation(report)
        if confirm != code:
            stale = "The problems are not those the code was given for. " if confirm else ""
            raise CommandError(
                f"{stale}{report.summary()}\nTo acknowledge exactly these {problems} problem"
                f"{'s' if problems != 1 else ''}, run again with --confirm {code}"
            )
        with audit.chain_transaction():
            event = audit.record(
                AuditAction.CHAIN_BREAK_ACKNOWLEDGED,
                actor=user,
                message=reason.strip(),
                data={
                    "fingerprints": sorted(report.fingerprints),
                    "problems": [[report.broken_at, report.problem], *report.later],
                    "summary": report.summary(),
                },
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Acknowledged {problems} problem{'s' if problems != 1 else ''} as event {event.pk}, by {by}. The "
                "reconciler's next verification leaves them out and checkpoints the chain's head again; anything "
                "else, or any change to what they concern, is reported and alerted."
            )
        )
