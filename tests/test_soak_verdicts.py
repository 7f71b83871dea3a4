"""What a soak may judge and when: the query template's range, gaps in the samples, failure limits."""

import pytest
from django.core.exceptions import ValidationError

pytestmark = pytest.mark.django_db


# --- the query template ------------------------------------------------------------------------------


def test_a_range_placeholder_with_a_longest_range_that_is_no_duration_is_refused(environments):
    qa = environments["qa"]
    qa.prometheus_query_template = "sum(rate(x[{range:five minutes}]))"
    with pytest.raises(ValidationError) as raised:
        qa.clean()
    assert raised.value.message_dict["prometheus_query_template"] == [
        "In {range:five minutes}: 'five minutes' is not a PromQL duration such as 30s, 5m or 1h30m."
    ]


def test_a_fixed_range_longer_than_the_soak_is_refused_saying_to_write_range(environments):
    qa = environments["qa"]
    qa.prometheus_query_template = "sum(rate(x[10m])) / sum(rate(y[10m]))"
    with pytest.raises(ValidationError) as raised:
        qa.clean()
    soak, rollback_soak = raised.value.message_dict["prometheus_query_template"]
    assert soak.startswith("The query's 10m range is longer than the soak window (5m)")
    assert "Write [{range}] instead, or lengthen the soak." in soak
    assert rollback_soak.startswith("The query's 10m range is longer than the rollback soak (2m)")


def test_a_fixed_range_longer_than_the_rollback_soak_is_refused_too(environments):
    qa = environments["qa"]
    qa.prometheus_query_template = "sum(rate(x[5m])) / sum(rate(y[5m]))"
    with pytest.raises(ValidationError) as raised:
        qa.clean()
    [error] = raised.value.message_dict["prometheus_query_template"]
    assert error.startswith("The query's 5m range is longer than the rollback soak (2m)")


@pytest.mark.parametrize(
    "template", ["sum(rate(x[{range}]))", "sum(rate(x[{range:1h}]))", "sum(rate(x[1m]))", 'nexo_error_ratio{s="a"}']
)
def test_queries_that_fit_the_soak_are_accepted(environments, template):
    qa = environments["qa"]
    qa.prometheus_query_template = template
    qa.clean()


def test_the_default_query_measures_only_the_deployment_being_verified(environments):
    assert "[{range}]" in environments["production"].prometheus_query_template
    assert "[5m]" not in environments["production"].prometheus_query_template
