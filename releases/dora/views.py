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
from .forms import DoraFilterForm


def _dora_report(request, default_interval):
    """The report the query string asks for, or None with the form's errors."""
    form = DoraFilterForm(request.GET, default_interval=default_interval)
    if not form.is_valid():
        return form, None
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


@require_GET
def dora_report(request):
    """Any signed-in user (stakeholders): the five DORA figures, their bands, trends and per-service table."""
    form, report = _dora_report(request, default_interval=metrics.Interval.WEEKLY)
    context = {
        "form": form,
        "report": report,
        # What the form shows chosen: the report's scope, or what was asked for when it was refused.
        "chosen": _report_query_values(report) if report else {key: form.data.get(key, "") for key in form.fields},
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
    "lead_time_median_hours",
    "lead_time_p90_hours",
    "lead_time_deployments",
    "lead_time_band",
    "change_failure_rate",
    "failed_deployments",
    "change_failure_rate_band",
    "recovery_median_hours",
    "recovery_p90_hours",
    "recovered_failures",
    "not_recovered_failures",
    "recovery_band",
    "rework_rate",
    "hotfix_deployments",
    "rollbacks",
]


def _csv_row(kind, name, report, figures):
    def hours(seconds):
        return "" if seconds is None else round(seconds / 3600, 4)

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
        hours(figures.lead_time_median),
        hours(figures.lead_time_p90),
        figures.lead_time_samples,
        band(figures.lead_time_band),
        blank(figures.change_failure_rate),
        figures.failed_deployments,
        band(figures.change_failure_rate_band),
        hours(figures.recovery_median),
        hours(figures.recovery_p90),
        figures.recovered_failures,
        figures.unrecovered_failures,
        band(figures.recovery_time_band),
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
    for row in report.services:
        writer.writerow(_csv_row("service", row.service.name, report, row.figures))
    bucket_kind = "week" if report.interval == metrics.Interval.WEEKLY else "month"
    for bucket in report.trend:
        writer.writerow(_csv_row(bucket_kind, bucket.start.isoformat(), report, bucket.figures))
    return response
