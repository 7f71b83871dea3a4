"""Filters of the audit log page and its export."""

from datetime import datetime, time, timedelta
from urllib.parse import urlencode

from django import forms
from django.utils import timezone

from nexo_portal.lib import dates
from nexo_portal.lib.api import CONFLICT_CODE

from .models import ACTOR_MAX_LENGTH, VERDICT_ACTIONS, AuditAction, AuditEvent


def _names_in_log(field):
    names = AuditEvent.objects.exclude(**{field: ""}).order_by(field).values_list(field, flat=True).distinct()
    return [(name, name) for name in names]


class AuditFilterForm(forms.Form):
    service = forms.ChoiceField(required=False)
    environment = forms.ChoiceField(required=False)
    actor = forms.CharField(
        required=False, max_length=ACTOR_MAX_LENGTH, help_text="Part of a user name or api-token:NAME."
    )
    action = forms.ChoiceField(required=False, choices=[("", "Any action"), *AuditAction.choices])
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The names the log itself holds: a service or environment removed since keeps its history.
        self.fields["service"].choices = [("", "Any service"), *_names_in_log("service")]
        self.fields["environment"].choices = [("", "Any environment"), *_names_in_log("environment")]

    def clean(self):
        cleaned = super().clean()
        for name in ("since", "until"):
            if cleaned.get(name) and not dates.in_range(cleaned[name]):
                self.add_error(name, forms.ValidationError(dates.OUT_OF_RANGE, code="invalid"))
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            self.add_error("until", forms.ValidationError("The end date is before the start date.", code=CONFLICT_CODE))
        return cleaned

    def filter(self, events):
        """The events matching the valid filters; call after is_valid()."""
        data = self.cleaned_data
        if data.get("service"):
            events = events.filter(service=data["service"])
        if data.get("environment"):
            events = events.filter(environment=data["environment"])
        if data.get("actor"):
            events = events.filter(actor__icontains=data["actor"].strip())
        if data.get("action"):
            events = events.filter(action=data["action"])
        zone = timezone.get_current_timezone()
        if data.get("since"):
            events = events.filter(created_at__gte=datetime.combine(data["since"], time.min, zone))
        if data.get("until"):
            events = events.filter(created_at__lt=datetime.combine(data["until"] + timedelta(days=1), time.min, zone))
        return events

    def why_not_per_promotion(self):
        """Why these filters select no record of the per-promotion export, or None; call after is_valid().

        A record per promotion stands for the verdict that completed it, which the system records: an
        actor, or an action other than a verdict, matches none, and an empty export would read as
        "nothing happened".
        """
        action, actor = self.cleaned_data.get("action"), self.cleaned_data.get("actor")
        verdicts = " or ".join(sorted(VERDICT_ACTIONS))
        if action and action not in VERDICT_ACTIONS:
            return (
                f"The export per completed promotion has one record per verdict ({verdicts}), so action={action} "
                "selects none: ask for per=step, one record per event."
            )
        if actor:
            return (
                "The export per completed promotion has one record per verdict, which the system records, so an "
                "actor selects none: ask for per=step, one record per event."
            )
        return None

    def query_string(self):
        """The filters as they were given, for links that keep them (pages, export)."""
        return urlencode({key: value for key, value in self.data.items() if key in self.fields and value})
