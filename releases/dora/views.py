"""The DORA page and its CSV and JSON exports, for any signed-in user (stakeholders)."""

import json
from urllib.parse import urlencode

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from nexo_portal.lib import inert

from . import charts, metrics
from .forms import SORTS, DoraFilterForm, period_presets, sort_rows


def _dora_report(request, default_interval):
    """The report the query string asks for, or None with the form's errors."""
    form = DoraFilterForm(request.GET, default_interval=default_interval)
    if not form.is_valid():
        return form, None
    form.sort = form.pop_sort()
    try:
        return form, metrics.report(**form.cleaned_data)
    except metrics.ReportError as error:
        form.add_error(None, str(error))
        return form, None


def _report_query_values(report):
    """The query parameters that ask for exactly this report."""
    parameters = {
        "environment": report.environment.name,
        "start": str(report.period.start),
        "end": str(report.period.end),
        "interval": report.interval,
    }
    if report.service:
        parameters["service"] = report.service.name
    if report.team:
        parameters["team"] = report.team.name
    return parameters


def _report_query(report):
    """The query string that asks for exactly this report, for its export and API links."""
    return urlencode(_report_query_values(report))


def _form_errors(form):
    return " ".join(error for errors in form.errors.values() for error in errors)


def _export_filename(report, extension):
    scope = report.service.name if report.service else (report.team.name if report.team else "all-services")
    return f"dora-{report.environment.name}-{scope}-{report.period.start}-{report.period.end}.{extension}"


def _sort_links(report, sort):
    """For each sortable column: the link that sorts by it (again: the other way) and its aria-sort."""
    links = {}
    for key in SORTS:
        current = sort.removeprefix("-") == key
        descending = sort.startswith("-")
        query = {**_report_query_values(report), "sort": f"-{key}" if current and not descending else key}
        links[key] = {
            "url": "?" + urlencode(query) + "#per-service",
            "aria_sort": ("descending" if descending else "ascending") if current else "",
        }
    return links


def _presets(report, chosen):
    today = timezone.localdate()
    scope = {key: value for key, value in chosen.items() if key not in ("start", "end") and value}
    return [
        {
            "label": label,
            "url": "?" + urlencode({**scope, "start": str(start), "end": str(end)}),
            "current": bool(report) and (report.period.start, report.period.end) == (start, end),
        }
        for label, start, end in period_presets(today)
    ]


def _chosen_when_refused(form):
    """What was asked for, and the defaults where nothing was: the form then reads as the report would."""
    chosen = {key: form.data.get(key, "") for key in form.fields}
    if not chosen["environment"]:
        default = metrics.default_environment()
        chosen["environment"] = default.name if default else ""
    chosen["interval"] = chosen["interval"] or form.default_interval
    return chosen


@require_GET
def dora_report(request):
    """Any signed-in user (stakeholders): the five DORA figures, their bands, trends and per-service table."""
    form, report = _dora_report(request, default_interval=metrics.Interval.WEEKLY)
    sort = getattr(form, "sort", "service")
    chosen = _report_query_values(report) if report else _chosen_when_refused(form)
    context = {
        "form": form,
        "report": report,
        # What the form shows chosen: the report's scope, or what was asked for when it was refused.
        "chosen": chosen,
        "presets": _presets(report, chosen),
        "service_rows": sort_rows(report.services, sort) if report else [],
        "sort_links": _sort_links(report, sort) if report else {},
        "charts": charts.trend_charts(report) if report and report.trend else [],
        "environments": form.fields["environment"].queryset,
        "teams": form.fields["team"].queryset,
        "services": form.fields["service"].queryset,
        "intervals": metrics.Interval.choices,
        "bands_source": metrics.BANDS_SOURCE,
        "export_query": _report_query(report) if report else "",
        "time_zone": timezone.get_current_timezone_name(),
    }
    return render(request, "dora/report.html", context, status=200 if report else 400)


@require_GET
def dora_export_json(request):
    """Any signed-in user: the report as JSON, the same document as GET /api/v1/dora/."""
    form, report = _dora_report(request, default_interval=metrics.Interval.ALL)
    if report is None:
        return HttpResponseBadRequest(_form_errors(form), content_type="text/plain; charset=utf-8")
    response = HttpResponse(
        json.dumps(report.as_dict(), cls=DjangoJSONEncoder, indent=2), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="{_export_filename(report, "json")}"'
    return response


# The page's units (days, %) next to the finer ones (hours, ratios) that spreadsheets compute with.
CSV_COLUMNS = [
    "kind",
    "name",
    "environment",
    "start",
    "end",
    "change_deployments",
    "deploy_days",
    "deployments_per_week",
    "median_deploy_days_per_week",
    "median_deploy_days_per_month",
    "deployment_frequency_band",
    "lead_time_median_days",
    "lead_time_p90_days",
    "lead_time_median_hours",
    "lead_time_p90_hours",
    "lead_time_deployments",
    "lead_time_band",
    "change_failure_rate_percent",
    "change_failure_rate",
    "failed_deployments",
    "change_failure_rate_band",
    "recovery_median_days",
    "recovery_p90_days",
    "recovery_median_hours",
    "recovery_p90_hours",
    "recovered_failures",
    "not_recovered_failures",
    "recovery_band",
    "rework_rate_percent",
    "rework_rate",
    "hotfix_deployments",
    "rollbacks",
]


def _csv_row(kind, name, report, figures):
    def hours(seconds):
        return "" if seconds is None else round(seconds / 3600, 4)

    def days(seconds):
        return "" if seconds is None else round(seconds / 86400, 4)

    def percent(ratio):
        return "" if ratio is None else round(ratio * 100, 2)

    def blank(value):
        return "" if value is None else value

    def band(value):
        return "" if value is None else value.value

    return [
        kind,
        name,
        report.environment.name,
        report.period.start,
        report.period.end,
        figures.change_deployments,
        figures.deploy_days,
        round(figures.per_week, 4),
        blank(figures.deploy_days_per_week),
        blank(figures.deploy_days_per_month),
        band(figures.deployment_frequency_band),
        days(figures.lead_time_median),
        days(figures.lead_time_p90),
        hours(figures.lead_time_median),
        hours(figures.lead_time_p90),
        figures.lead_time_samples,
        band(figures.lead_time_band),
        percent(figures.change_failure_rate),
        blank(figures.change_failure_rate),
        figures.failed_deployments,
        band(figures.change_failure_rate_band),
        days(figures.recovery_median),
        days(figures.recovery_p90),
        hours(figures.recovery_median),
        hours(figures.recovery_p90),
        figures.recovered_failures,
        figures.unrecovered_failures,
        band(figures.recovery_time_band),
        percent(figures.rework_rate),
        blank(figures.rework_rate),
        figures.hotfix_deployments,
        figures.rollbacks,
    ]


@require_GET
def dora_export_csv(request):
    """Any signed-in user: the report for spreadsheets.

    One row for the whole scope, one for each service and one for each week or month.
    """
    form, report = _dora_report(request, default_interval=metrics.Interval.ALL)
    if report is None:
        return HttpResponseBadRequest(_form_errors(form), content_type="text/plain; charset=utf-8")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_export_filename(report, "csv")}"'
    writer = inert.csv_writer(response)
    writer.writerow(CSV_COLUMNS)
    scope = report.service.name if report.service else (report.team.name if report.team else "all services")
    writer.writerow(_csv_row("total", scope, report, report.overall))
    for row in sort_rows(report.services, form.sort):
        writer.writerow(_csv_row("service", row.service.name, report, row.figures))
    bucket_kind = "week" if report.interval == metrics.Interval.WEEKLY else "month"
    for bucket in report.trend:
        writer.writerow(_csv_row(bucket_kind, bucket.start.isoformat(), report, bucket.figures))
    return response
