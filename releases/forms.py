"""Forms of the release pages: the DORA report's filters and the board's confirmations."""

from django import forms
from django.contrib.auth.models import Group

from environments.models import Environment

from . import dora
from .models import Service

COMMENT_WIDGET = forms.Textarea(attrs={"rows": 3})


class CommentForm(forms.Form):
    comment = forms.CharField(required=False, max_length=2000, widget=COMMENT_WIDGET, label="Comment (optional)")


class RejectForm(forms.Form):
    comment = forms.CharField(
        max_length=2000,
        widget=COMMENT_WIDGET,
        label="Why do you reject it?",
        help_text="Required: the requester reads it on the promotion page and in the audit log.",
        error_messages={"required": "Say why you reject it: the requester reads this comment."},
    )

    def clean_comment(self):
        comment = self.cleaned_data["comment"].strip()
        if not comment:
            raise forms.ValidationError("Say why you reject it: the requester reads this comment.")
        return comment


class RequestForm(forms.Form):
    emergency = forms.BooleanField(
        required=False,
        label="Break-glass: this is for an incident",
        help_text="Skips the previous-environment verification and change freezes; approvals are still required.",
    )
    reason = forms.CharField(required=False, max_length=2000, widget=COMMENT_WIDGET, label="Incident and reason")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("emergency") and not cleaned.get("reason", "").strip():
            self.add_error("reason", "A break-glass promotion needs a reason: say which incident it is for.")
        return cleaned


class RollbackForm(forms.Form):
    release = forms.ChoiceField(label="Roll back to")

    def __init__(self, *args, versions, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["release"].choices = [(version, version) for version in versions]


class DoraFilterForm(forms.Form):
    """The DORA report's scope, from the query string; every field may be left out."""

    environment = forms.ModelChoiceField(
        Environment.objects.in_pipeline_order(),
        to_field_name="name",
        required=False,
        error_messages={"invalid_choice": "There is no environment called “%(value)s”."},
    )
    team = forms.ModelChoiceField(
        Group.objects.filter(services__isnull=False).distinct().order_by("name"),
        to_field_name="name",
        required=False,
        error_messages={"invalid_choice": "No team owns a service under the name “%(value)s”."},
    )
    service = forms.ModelChoiceField(
        Service.objects.order_by("name"),
        to_field_name="name",
        required=False,
        error_messages={"invalid_choice": "There is no service called “%(value)s”."},
    )
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    interval = forms.ChoiceField(choices=dora.Interval.choices, required=False)

    def __init__(self, *args, default_interval=dora.Interval.WEEKLY, **kwargs):
        super().__init__(*args, **kwargs)
        self.default_interval = default_interval

    def clean(self):
        data = super().clean()
        try:
            data["period"] = dora.Period.resolve(data.pop("start", None), data.pop("end", None))
        except dora.ReportError as error:
            raise forms.ValidationError(str(error)) from error
        data["interval"] = data.get("interval") or self.default_interval
        return data
