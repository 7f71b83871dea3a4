"""The Prometheus client against a real Prometheus scraping a test exporter, and against the error
answers a real one only gives under load or outage."""

import math
import socket
from datetime import UTC, datetime, timedelta

import pytest

from environments.prometheus import (
    Prometheus,
    PrometheusError,
    Sample,
    describe_duration,
    longest_range,
    parse_duration,
)


@pytest.fixture
def client(configured_prometheus):
    return Prometheus.from_settings()


def ratio_query(service, environment="develop"):
    return f'nexo_error_ratio{{service="{service}",environment="{environment}"}}'


def is_nan(values):
    return len(values) == 1 and math.isnan(values[0])


def scraped(prometheus, service, environment, value):
    """Set the gauge and wait until Prometheus has scraped exactly that value."""
    prometheus.set_error_ratio(service, environment, value)
    if math.isnan(value):
        prometheus.wait_for(ratio_query(service, environment), is_nan)
    else:
        prometheus.wait_for(ratio_query(service, environment), lambda values: values == [value])


@pytest.mark.prometheus
def test_a_vector_result_is_one_sample_per_series_with_labels_and_a_float(client, prometheus):
    scraped(prometheus, "svc-vector", "develop", 0.25)

    [sample] = client.query(ratio_query("svc-vector"))

    assert sample.value == 0.25
    assert sample.labels["__name__"] == "nexo_error_ratio"
    labels = sample.labels
    assert (labels["service"], labels["environment"], labels["job"]) == ("svc-vector", "develop", "nexo")


@pytest.mark.prometheus
def test_a_scalar_result_is_one_sample_without_labels(client, prometheus):
    scraped(prometheus, "svc-scalar", "develop", 0.5)

    assert client.query(f"scalar({ratio_query('svc-scalar')})") == [Sample(labels={}, value=0.5)]


@pytest.mark.prometheus
def test_no_matching_series_is_an_empty_result_and_no_value(client):
    assert client.query(ratio_query("svc-never-exported")) == []
    assert client.instant_value(ratio_query("svc-never-exported")) is None


@pytest.mark.prometheus
def test_nan_stays_nan_for_the_caller_to_judge(client, prometheus):
    scraped(prometheus, "svc-nan", "develop", math.nan)

    [sample] = client.query(ratio_query("svc-nan"))

    assert math.isnan(sample.value)
    assert math.isnan(client.instant_value(ratio_query("svc-nan")))


@pytest.mark.prometheus
@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinities_are_read_as_floats(client, prometheus, value):
    service = f"svc-inf-{'plus' if value > 0 else 'minus'}"
    scraped(prometheus, service, "develop", value)

    assert client.instant_value(ratio_query(service)) == value


@pytest.mark.prometheus
def test_several_series_give_the_highest_value(client, prometheus):
    scraped(prometheus, "svc-pods", "develop", 0.01)
    scraped(prometheus, "svc-pods", "qa", 0.2)

    assert client.instant_value('nexo_error_ratio{service="svc-pods"}') == 0.2


@pytest.mark.prometheus
def test_a_nan_series_is_skipped_when_another_has_a_number(client, prometheus):
    scraped(prometheus, "svc-idle-pod", "develop", math.nan)
    scraped(prometheus, "svc-idle-pod", "qa", 0.03)

    assert client.instant_value('nexo_error_ratio{service="svc-idle-pod"}') == 0.03


@pytest.mark.prometheus
def test_an_error_rate_from_counters_with_rate(client, prometheus):
    service, failed_per_step, total_per_step = "svc-rate", 1, 4
    query = (
        f'sum(rate(http_requests_total{{service="{service}",status=~"5.."}}[10s]))'
        f' / sum(rate(http_requests_total{{service="{service}"}}[10s]))'
    )
    expected = failed_per_step / total_per_step

    def serve_traffic(values):
        prometheus.count_requests(service, "develop", 500, failed_per_step)
        prometheus.count_requests(service, "develop", 200, total_per_step - failed_per_step)
        return len(values) == 1 and values[0] == pytest.approx(expected, abs=0.05)

    prometheus.wait_for(query, serve_traffic, timeout=20)

    assert client.instant_value(query) == pytest.approx(expected, abs=0.05)


@pytest.mark.prometheus
def test_a_query_at_a_past_time_sees_the_data_of_that_time(client, prometheus):
    scraped(prometheus, "svc-new", "develop", 0.1)

    assert client.query(ratio_query("svc-new"), at=datetime.now(UTC) - timedelta(hours=1)) == []
    assert client.query(ratio_query("svc-new"), at=datetime.now(UTC).timestamp()) != []


@pytest.mark.prometheus
def test_a_range_vector_is_refused_with_what_to_write_instead(client, prometheus):
    scraped(prometheus, "svc-range", "develop", 0.1)

    with pytest.raises(PrometheusError) as raised:
        client.query(f"{ratio_query('svc-range')}[1m]")

    assert "matrix result" in str(raised.value)
    assert "instant vector or a scalar" in str(raised.value)


@pytest.mark.prometheus
def test_a_syntax_error_is_reported_with_prometheus_bad_data_message(client):
    with pytest.raises(PrometheusError) as raised:
        client.query('nexo_error_ratio{service="svc"')

    error = raised.value
    assert (error.http_status, error.error_type) == (400, "bad_data")
    assert "parse error" in str(error)
    assert "bad_data" in str(error)
    assert 'nexo_error_ratio{service="svc"' in str(error)


@pytest.mark.prometheus
def test_a_query_that_cannot_be_executed_is_reported_with_prometheus_execution_message(client, prometheus):
    scraped(prometheus, "svc-many", "develop", 0.1)
    scraped(prometheus, "svc-many", "qa", 0.2)
    many = 'nexo_error_ratio{service="svc-many"}'

    with pytest.raises(PrometheusError) as raised:
        client.query(f"{many} + on(service) {many}")

    error = raised.value
    assert (error.http_status, error.error_type) == (422, "execution")
    assert "many-to-many matching not allowed" in str(error)


@pytest.mark.parametrize(
    ("http_status", "error_type", "message"),
    [
        (400, "bad_data", 'invalid parameter "query": 1:17: parse error: unexpected end of input'),
        (422, "execution", "query processing would load too many samples into memory in query execution"),
        (503, "timeout", "query timed out in expression evaluation"),
        (503, "unavailable", "TSDB not ready"),
    ],
)
def test_error_answers_carry_prometheus_error_type_and_message(prometheus_errors, http_status, error_type, message):
    prometheus_errors.answer_error(http_status, error_type, message)

    with pytest.raises(PrometheusError) as raised:
        Prometheus(prometheus_errors.url).query("sum(rate(http_requests_total[5m]))")

    error = raised.value
    assert (error.http_status, error.error_type) == (http_status, error_type)
    assert message in str(error)
    assert error_type in str(error)
    assert f"HTTP {http_status}" in str(error)


def test_a_proxy_page_instead_of_the_api_says_what_came_back(prometheus_errors):
    prometheus_errors.answer_page(502, "<html><body><h1>502 Bad Gateway</h1></body></html>")

    with pytest.raises(PrometheusError) as raised:
        Prometheus(prometheus_errors.url).query("up")

    assert raised.value.http_status == 502
    assert "HTTP 502" in str(raised.value)
    assert "502 Bad Gateway" in str(raised.value)


@pytest.mark.parametrize("body", ['{"status": "success", "data": ["up"]}', '{"status": "success", "data": "ok"}'])
def test_json_of_another_api_that_says_success_is_an_error_that_says_what_came_back(prometheus_errors, body):
    # JSend's shape, which many APIs answer in: "success" too, but no query result.
    prometheus_errors.answer_page(200, body, content_type="application/json")

    with pytest.raises(PrometheusError) as raised:
        Prometheus(prometheus_errors.url).query("up")

    assert "HTTP 200" in str(raised.value)
    assert "Is PROMETHEUS_URL the Prometheus server?" in str(raised.value)


def test_the_query_and_time_are_sent_as_parameters(prometheus_errors):
    Prometheus(prometheus_errors.url).query("up", at=1767225600.5)

    assert prometheus_errors.queries == [{"query": ["up"], "time": ["1767225600.5"]}]


def test_an_unreachable_prometheus_is_an_error_that_says_why():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"

    with pytest.raises(PrometheusError) as raised:
        Prometheus(url).instant_value("up")

    assert "Could not reach Prometheus" in str(raised.value)
    assert "connection refused" in str(raised.value)


def test_from_settings_is_none_when_prometheus_is_not_configured(settings):
    settings.PROMETHEUS_URL = ""

    assert Prometheus.from_settings() is None


def test_from_settings_uses_the_url_and_timeout_settings(settings):
    settings.PROMETHEUS_URL = "http://prometheus.monitoring:9090/"
    settings.HTTP_TIMEOUT_SECONDS = 2.5

    prometheus = Prometheus.from_settings()

    assert (prometheus.base_url, prometheus.timeout) == ("http://prometheus.monitoring:9090", 2.5)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800), ("1w", 604800)],
)
def test_promql_durations_are_read_as_prometheus_reads_them(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "1.5m", "-5m", "5min"])
def test_what_is_not_a_promql_duration_is_refused_saying_what_one_looks_like(text):
    with pytest.raises(ValueError, match="is not a PromQL duration such as 30s, 5m or 1h30m"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("query", "longest"),
    [
        ('sum(rate(x{status=~"5[0-9]+"}[5m])) / sum(rate(x[10m]))', timedelta(minutes=10)),
        ("max_over_time(rate(x[1m])[1h30m:1m])", timedelta(minutes=90)),
        ('nexo_error_ratio{service="be"}', None),
    ],
)
def test_the_longest_range_written_in_a_query(query, longest):
    assert longest_range(query) == longest


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (95, "1m35s"), (300, "5m"), (5400, "1h30m")])
def test_durations_are_described_in_promql_style(seconds, text):
    assert describe_duration(timedelta(seconds=seconds)) == text
