"""Keep in the last verification the newest event it read and the lowest one it found broken, and sign
the row again with them, so that a verification the portal signed is still believed after the upgrade:
a break already alerted is not alerted again, and keeps the time it began.

The row says neither, so until the next verification (within AUDIT_VERIFY_SECONDS) it claims no more
than it can: read through the event its checkpoint vouched for, and broken from where it broke if that
was its only problem, else from the first event.
"""

import hmac
import json
from datetime import UTC

from django.conf import settings
from django.db import migrations, models

from audit.log import keyed_digest


def fields_before(verification):
    """ChainVerification.signed_fields() as migration 0024 signed them."""
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


def fields_after(verification):
    """ChainVerification.signed_fields() as of this migration (a historical model has no methods)."""
    return {
        **fields_before(verification),
        "broken_from": verification.broken_from,
        "checked_through": verification.checked_through,
    }


def mac(fields):
    return keyed_digest("verification", json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def signed_by_portal(verification, fields):
    return hmac.compare_digest(verification.mac, mac(fields(verification)))


def say_where_it_read_and_broke(apps, schema_editor):
    # Without the key there is nothing to sign with; the watch then does not believe the row, once.
    if not settings.AUDIT_CHECKPOINT_KEY:
        return
    ChainVerification = apps.get_model("audit", "ChainVerification")
    AuditEvent = apps.get_model("audit", "AuditEvent")
    for verification in ChainVerification.objects.all():
        # One changed without the key is not believed now; signing it would make it believed.
        if not signed_by_portal(verification, fields_before):
            continue
        if verification.ok:
            verification.checked_through = verification.vouched_through
        elif verification.alerted == f"{verification.problem} at {verification.broken_at}":
            verification.broken_from = verification.broken_at
        else:
            # Later problems may lie before the first one reported.
            first = AuditEvent.objects.order_by("id").values_list("id", flat=True).first()
            verification.broken_from = min(verification.broken_at, first or verification.broken_at)
        verification.mac = mac(fields_after(verification))
        verification.save(update_fields=["checked_through", "broken_from", "mac"])


def sign_as_before(apps, schema_editor):
    """Going back to 0024: the row signed as it signed it, so that it stays believed there."""
    if not settings.AUDIT_CHECKPOINT_KEY:
        return
    ChainVerification = apps.get_model("audit", "ChainVerification")
    for verification in ChainVerification.objects.all():
        if signed_by_portal(verification, fields_after):
            verification.mac = mac(fields_before(verification))
            verification.save(update_fields=["mac"])


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0024_sign_the_last_verification"),
    ]

    operations = [
        migrations.AddField(
            model_name="chainverification",
            name="broken_from",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="chainverification",
            name="checked_through",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(say_where_it_read_and_broke, sign_as_before),
    ]
