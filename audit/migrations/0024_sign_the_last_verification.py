"""Sign the last verification a portal saved before verifications were signed (0022 gave the row an
empty MAC), so that the first round after the upgrade believes it: a break already alerted is not
alerted again, and keeps the time it began."""

import json
from datetime import UTC

from django.conf import settings
from django.db import migrations

from audit.log import keyed_digest


def signed_fields(verification):
    """ChainVerification.signed_fields() as of this migration: a historical model has no methods, and
    the row is signed as the watch signed it then (tests/test_audit_watch.py checks the watch believes it)."""
    return {
        "checked_at": verification.checked_at.astimezone(UTC).isoformat(),
        "ok": verification.ok,
        "problem": verification.problem,
        "broken_at": verification.broken_at,
        "summary": verification.summary,
        "events_checked": verification.events_checked,
        "vouched_through": verification.vouched_through,
        "unvouched": verification.unvouched,
        "witness_error": verification.witness_error,
        "broken_since": verification.broken_since and verification.broken_since.astimezone(UTC).isoformat(),
        "alerted": verification.alerted,
    }


def sign_unsigned_verifications(apps, schema_editor):
    # Without the key there is nothing to sign with; the watch then does not believe the row, once.
    if not settings.AUDIT_CHECKPOINT_KEY:
        return
    ChainVerification = apps.get_model("audit", "ChainVerification")
    # Only rows without a MAC, from before: one with a MAC that does not check was changed since, and
    # signing it would make it believed.
    for verification in ChainVerification.objects.filter(mac=""):
        fields = json.dumps(signed_fields(verification), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        verification.mac = keyed_digest("verification", fields)
        verification.save(update_fields=["mac"])


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0023_chain_break_acknowledged_action"),
    ]

    operations = [
        migrations.RunPython(sign_unsigned_verifications, migrations.RunPython.noop),
    ]
