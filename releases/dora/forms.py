"""The DORA report's scope, as the page and its exports read it from the query string."""

from datetime import date, timedelta

from django import forms
from django.contrib.auth.models import Group

from environments.models import Environment
from releases.models import Service

from . import metrics

# The per-service table's columns that sort, each with what it sorts by (None sorts last).
SORTS = {
    "service": lambda row: row.service.name,
    "team": lambda row: row.service.team.name if row.service.team_id else None,
    "deployments": lambda row: row.figures.change_deployments,
    "per_week": lambda row: row.figures.per_week,
    "lead_time": lambda row: row.figures.lead_time_median,
    "change_failure_rate": lambda row: row.figures.change_failure_rate,
    "recovery": lambda row: row.figures.recovery_median,
    "rework": lambda row: row.figures.rework_rate,
}
SORT_CHOICES = [(key, key) for key in SORTS] + [(f"-{key}", f"-{key}") for key in SORTS]


def sort_rows(rows, sort):
    """The per-service rows in the order `sort` asks ("lead_time", or "-lead_time" for the largest
    first); rows without the figure come last either way, then by service name."""
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    value = SORTS[key]
    present = sorted(
        (row for row in rows if value(row) is not None),
        key=lambda row: (value(row), row.service.name),
        reverse=descending,
    )
    return present + sorted((row for row in rows if value(row) is None), key=lambda row: row.service.name)


def period_presets(today: date):
    """(label, start, end) of the periods offered in one click: the last 30 days, the last
    calendar quarter and this year so far."""
    quarter_start = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
    last_quarter_end = quarter_start - timedelta(days=1)
    last_quarter_start = date(last_quarter_end.year, 3 * ((last_quarter_end.month - 1) // 3) + 1, 1)
    return [
        ("Last 30 days", today - timedelta(days=29), today),
        ("Last quarter", last_quarter_start, last_quarter_end),
        ("This year", date(today.year, 1, 1), today),
    ]


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
    # How the page orders its per-service table; not part of the report (`pop_sort`).
    sort = forms.ChoiceField(
        choices=SORT_CHOICES,
        required=False,
        error_messages={"invalid_choice": "The table cannot be sorted by “%(value)s”."},
    )

    def __init__(self, *args, default_interval=metrics.Interval.WEEKLY, **kwargs):
        super().__init__(*args, **kwargs)
        self.default_interval = default_interval

    def clean(self):
        data = super().clean()
        try:
            data["period"] = metrics.Period.resolve(data.pop("start", None), data.pop("end", None))
        except metrics.ReportError as error:
            if error.field:
                raise forms.ValidationError({error.field: str(error)}) from error
            raise forms.ValidationError(str(error)) from error
        data["interval"] = data.get("interval") or self.default_interval
        return data

    def pop_sort(self):
        """The table's order, taken out of the report's scope: "service" unless asked."""
        return self.cleaned_data.pop("sort", "") or "service"
