"""How the DORA page presents its figures (which tests/test_dora_page.py pins): axis labels that
fit, a per-service table that sorts and links, period presets, and a CSV in the page's units."""

import csv
import io
import re
from datetime import date

import pytest

from releases.dora import charts
from releases.dora.forms import period_presets
from tests import test_dora_page
from tests.test_dora_page import MARCH

# The DORA page's hand-computed March and its reader, shared with tests/test_dora_page.py.
history = test_dora_page.history
reader = test_dora_page.reader

pytestmark = pytest.mark.django_db


def service_order(html):
    return re.findall(r'<tr data-service="([\w-]+)">', html)


@pytest.mark.parametrize(
    ("query", "order"),
    [
        ("", ["api", "web"]),
        ("&sort=-service", ["web", "api"]),
        ("&sort=lead_time", ["api", "web"]),  # 2 h before 10 h
        ("&sort=-lead_time", ["web", "api"]),
        ("&sort=-deployments", ["api", "web"]),  # 6 before 5
        ("&sort=deployments", ["web", "api"]),
        ("&sort=-team", ["web", "api"]),  # frontend-team after backend-team
    ],
)
def test_the_per_service_table_sorts_by_the_column_asked(history, reader, query, order):
    html = reader.get(f"/dora/?{MARCH}{query}").content.decode()

    assert service_order(html) == order


def test_the_sorted_column_says_so_and_its_link_sorts_the_other_way(history, reader):
    html = reader.get(f"/dora/?{MARCH}&sort=lead_time").content.decode()

    heading = re.search(r'<th scope="col" aria-sort="ascending"><a href="([^"]+)" data-sort="lead_time">', html)
    assert heading
    assert "sort=-lead_time" in heading.group(1)
    assert "start=2026-03-01" in heading.group(1)
    assert html.count("aria-sort=") == 1


def test_an_unknown_sort_is_refused_with_what_to_fix(history, reader):
    response = reader.get(f"/dora/?{MARCH}&sort=mood")

    assert response.status_code == 400
    assert "The table cannot be sorted by “mood”." in response.content.decode()


def test_each_service_links_to_its_own_report_and_to_the_board(history, reader):
    html = reader.get(f"/dora/?{MARCH}").content.decode()
    row = html.split('<tr data-service="api">', 1)[1].split("</tr>", 1)[0]

    assert (
        'href="?environment=production&amp;service=api&amp;start=2026-03-01&amp;end=2026-03-31&amp;interval=weekly"'
        in row
    )
    assert 'href="/?service=api"' in row


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (
            date(2026, 5, 15),
            [
                ("Last 30 days", date(2026, 4, 16), date(2026, 5, 15)),
                ("Last quarter", date(2026, 1, 1), date(2026, 3, 31)),
                ("This year", date(2026, 1, 1), date(2026, 5, 15)),
            ],
        ),
        (
            date(2026, 2, 1),
            [
                ("Last 30 days", date(2026, 1, 3), date(2026, 2, 1)),
                ("Last quarter", date(2025, 10, 1), date(2025, 12, 31)),
                ("This year", date(2026, 1, 1), date(2026, 2, 1)),
            ],
        ),
    ],
)
def test_period_presets(today, expected):
    assert period_presets(today) == expected


def test_the_page_offers_the_presets_in_the_same_scope(history, reader, time_machine):
    time_machine.move_to("2026-05-15T12:00:00Z")
    html = reader.get("/dora/?service=api&start=2026-04-16&end=2026-05-15").content.decode()

    presets = re.findall(r'<a href="([^"]+)" class="button small"( aria-current="true")? data-preset="([\w-]+)"', html)
    assert [(name, bool(current)) for _, current, name in presets] == [
        ("last-30-days", True),
        ("last-quarter", False),
        ("this-year", False),
    ]
    assert (
        presets[1][0]
        == "?environment=production&amp;interval=weekly&amp;service=api&amp;start=2026-01-01&amp;end=2026-03-31"
    )


def test_the_csv_gives_the_pages_units_days_and_percent(history, reader):
    response = reader.get(f"/dora/export.csv?{MARCH}")
    total = next(csv.DictReader(io.StringIO(response.content.decode())))

    assert float(total["lead_time_median_days"]) == pytest.approx(2 / 24, abs=1e-4)
    assert float(total["recovery_median_days"]) == pytest.approx(1.25 / 24, abs=1e-4)
    assert float(total["change_failure_rate_percent"]) == pytest.approx(100 * 2 / 11, abs=0.01)
    assert float(total["rework_rate_percent"]) == pytest.approx(100 / 12, abs=0.01)


@pytest.mark.parametrize("label", ["7.4 days", "1234.5 days", "100.0 %", "0"])
def test_a_charts_top_label_fits_left_of_the_plot(label):
    svg = charts.bar_chart("Lead time", [(date(2026, 3, 2), 1.0)], lambda value: label)

    tick = re.search(r'<text class="tick" x="([\d.]+)" y="18" text-anchor="end">', svg)
    assert tick
    # Right-aligned at x, the label needs about 7 px per character of 11 px text from the left edge.
    assert float(tick.group(1)) >= len(label) * charts.CHARACTER_WIDTH
