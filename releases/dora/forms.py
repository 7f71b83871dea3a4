"""The DORA report's scope, as the page and its exports read it from the query string."""

from django import forms
from django.contrib.auth.models import Group

from environments.models import Environment
from releases.models import Service

from . import metrics


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
    interval = forms.ChoiceField(choices=metrics.Interval.choices, required=False)

    def __init__(self, *args, default_interval=metrics.Interval.WEEKLY, **kwargs):
        super().__init__(*args, **kwargs)
        self.default_interval = default_interval

    def clean(self):
        data = super().clean()
        try:
            data["period"] = metrics.Period.resolve(data.pop("start", None), data.pop("end", None))
        except metrics.ReportError as error:
            raise forms.ValidationError(str(error)) from error
        data["interval"] = data.get("interval") or self.default_interval
        return data
