"""Walk the audit log's hash chain and compare it with the checkpoints and commit trailers kept
outside the database: say whether every event is where and what it was, and what is vouched for."""

from django.core.management.base import BaseCommand, CommandError

from audit import checkpoints


class Command(BaseCommand):
    help = (
        "Check the audit log's hash chain, its seals, and the checkpoints and GitOps trailers that vouch for it; "
        "exits 1 naming what was edited, removed, truncated, rewritten or forged, and 2 when the witness could not "
        "be read (the chain is then not verified)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--checkpoint",
            action="append",
            default=[],
            metavar="LINE",
            help="A checkpoint line copied from the log output ('audit-checkpoint v1 …'), to vouch too; repeatable.",
        )
        parser.add_argument("--no-witness", action="store_true", help="Do not read AUDIT_WITNESS.")

    def handle(self, *args, checkpoint, no_witness, **options):
        given = checkpoints.parse_checkpoints("\n".join(checkpoint), "the command line")
        if len(given) != len(checkpoint):
            raise CommandError("A --checkpoint line is not a checkpoint the portal wrote with AUDIT_CHECKPOINT_KEY.")
        report, witness_error = checkpoints.verify(None if no_witness else checkpoints.configured_witness(), given)
        if not report.ok:
            if witness_error:
                self.stderr.write(witness_error)
            raise CommandError(report.summary())
        if witness_error:
            # Not a pass: a deleted tail is what only the witness shows.
            raise CommandError(
                f"{witness_error}. Nothing else was found wrong, but the chain is not verified: run it again once "
                "the witness can be read, or with --no-witness to verify it without.",
                returncode=2,
            )
        self.stdout.write(self.style.SUCCESS(report.summary()))
