import pytest

from releases import calver
from releases.calver import CalVer, InvalidVersion
from releases.models import Release
from tests.factories import make_release, make_service


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026.02.1", CalVer(2026, 2, 1)),
        ("2026.02.15", CalVer(2026, 2, 15)),
        ("2026.12.999999", CalVer(2026, 12, 999999)),
        ("2026.02.16-hotfix-auth", CalVer(2026, 2, 16, "hotfix-auth")),
        ("2026.02.1-a3f2b1c", CalVer(2026, 2, 1, "a3f2b1c")),
        ("2026.03.1-rc.1", CalVer(2026, 3, 1, "rc.1")),
        ("2000.01.1", CalVer(2000, 1, 1)),
    ],
)
def test_parses_valid_versions(text, expected):
    parsed = calver.parse(text)
    assert parsed == expected
    assert str(parsed) == text


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "required"),
        ("2026.2.1", "not a CalVer version"),
        ("26.02.1", "not a CalVer version"),
        ("2026.13.1", "month must be 01 to 12"),
        ("2026.00.1", "month must be 01 to 12"),
        ("2026.02.0", "starts at 1"),
        ("2026.02.01", "no leading zeros"),
        ("2026.02.1234567", "at most 999999"),
        ("1999.02.1", "2000 or later"),
        ("2026.02.1-", "metadata after '-' is empty"),
        ("2026.02.1-Hotfix", "lowercase letters"),
        ("2026.02.1-.x", "starts with a letter or digit"),
        ("2026.02.1-hot_fix", "lowercase letters"),
        ("2026.02.1-" + "a" * 41, "at most 40"),
        ("v2026.02.1", "not a CalVer version"),
        ("2026.02.1 ", "not a CalVer version"),
        ("2026.02.1\n", "not a CalVer version"),
        ("2026-02-1", "not a CalVer version"),
        # Digits of other scripts: Python's \d and int() take them, URLs, tags and Git do not.
        ("2026.02.\uff15", "not a CalVer version"),
        ("\u0662\u0660\u0662\u0666.02.1", "not a CalVer version"),
        ("2026.\uff10\uff12.1", "not a CalVer version"),
        ("2026.02.1-a" + "b" * 100, "too long"),
    ],
)
def test_rejects_invalid_versions_with_a_specific_message(text, complaint):
    with pytest.raises(InvalidVersion, match=complaint):
        calver.parse(text)


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("2026.02.9", "2026.02.10"),
        ("2026.02.99", "2026.03.1"),
        ("2026.12.45", "2027.01.1"),
        ("2025.12.1000", "2026.01.1"),
        ("2026.02.15", "2026.02.16-hotfix-auth"),
    ],
)
def test_versions_order_by_year_month_build_not_text(older, newer):
    assert calver.parse(older) < calver.parse(newer)
    assert calver.parse(newer) > calver.parse(older)
    assert sorted([calver.parse(newer), calver.parse(older)]) == [calver.parse(older), calver.parse(newer)]


def test_tags_follow_the_reference_docs():
    assert calver.parse("2026.02.1").tags("a3f2b1c" + "0" * 33) == ["2026.02.1", "2026.02.1-a3f2b1c", "sha-a3f2b1c"]


@pytest.mark.django_db
def test_releases_sort_by_calver_in_the_database_not_by_string():
    service = make_service()
    for version in ["2026.02.9", "2027.01.1", "2026.02.10", "2026.12.3", "2026.03.1"]:
        make_release(service, version)
    versions = list(Release.objects.for_service(service).newest_first().values_list("version", flat=True))
    assert versions == ["2027.01.1", "2026.12.3", "2026.03.1", "2026.02.10", "2026.02.9"]


@pytest.mark.django_db
def test_release_stores_the_parsed_parts():
    release = make_release(make_service(), "2026.02.16-hotfix-auth")
    release.refresh_from_db()
    assert (release.year, release.month, release.build, release.metadata) == (2026, 2, 16, "hotfix-auth")
    assert release.tags() == [
        "2026.02.16-hotfix-auth",
        f"2026.02.16-hotfix-auth-{release.short_sha}",
        f"sha-{release.short_sha}",
    ]
