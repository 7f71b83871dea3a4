"""What a promotion ships, on the approve dialog and the promotion page: the releases since the one
running with their changelogs (markdown, sanitised), the commit range and its compare link, the CI
results, the image and the values-file diff of the GitOps commit (read from a real bare repository).
And the links out: Argo CD, the GitOps commit, the environment's dashboard; the soak as charts."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import Client

from nexo_portal.lib import markdown
from releases import shipping, transitions
from releases.gitops import values
from releases.models import CheckResult, PromotionKind, PromotionState, SampleCheck, VerificationSample
from tests.factories import make_release
from tests.gitops import VALUES, silent_git_host
from tests.history import ran

DIALOG = {"HX-Request": "true", "HX-Target": "dialog-body"}


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def shipping_world(pipeline, rita, sam, sara):
    """nexo-be 2026.02.1 runs in production; 2026.02.2 and 2026.02.3 came after, 2026.02.3 is verified in staging."""
    env = pipeline.environments
    service = pipeline.add_service("nexo-be", tag="2026.02.1")
    service.source_repo_url = "https://github.com/nexo-org/nexo-be"
    service.save()
    running = make_release(service, "2026.02.1", changelog="- feat: old feature")
    skipped = make_release(service, "2026.02.2", changelog="## Fixes\n- fix: **auth** timeout <script>x()</script>")
    target = make_release(service, "2026.02.3", changelog="- feat: [rate limiting](https://docs.example/rl)")
    for name in ("develop", "qa", "staging", "production"):
        ran(running, env[name], at=None)
    for name in ("develop", "qa", "staging"):
        ran(target, env[name])
    CheckResult.objects.create(
        release=target,
        environment=env["qa"],
        name="e2e",
        passed=True,
        url="https://ci.example/run/9",
        reported_by="api-token:ci",
    )
    CheckResult.objects.create(
        release=target,
        environment=env["qa"],
        name="security",
        passed=False,
        summary="1 high CVE",
        reported_by="api-token:ci",
    )
    promotion = transitions.request_promotion(target, env["production"], rita)
    return {
        "env": env,
        "service": service,
        "running": running,
        "skipped": skipped,
        "target": target,
        "promotion": promotion,
        "pipeline": pipeline,
        "rita": rita,
        "sam": sam,
        "sara": sara,
    }


# --- markdown -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "present", "absent"),
    [
        ("- feat: **bold**", "<li>feat: <strong>bold</strong></li>", "**"),
        ("<script>alert(1)</script>", "&lt;script&gt;", "<script"),
        ("[x](javascript:alert(1))", "javascript:alert(1)", 'href="javascript'),
        ("[docs](https://docs.example/a)", 'href="https://docs.example/a" rel="noopener noreferrer nofollow"', "<img"),
        ("![tracker](https://evil.example/pixel.png)", "https://evil.example/pixel.png", "<img"),
        ("# 2026.02.1", "<p><strong>2026.02.1</strong></p>", "<h1"),
        ('<a href="https://x" onclick="y()">raw</a>', "&lt;a", '<a href="https://x"'),
        # Struck through stays struck through: "breaking: drop v1 API" shown as live text misleads.
        ("- ~~breaking: drop v1 API~~ (reverted)", "<li><s>breaking: drop v1 API</s> (reverted)</li>", "~~"),
    ],
)
def test_changelog_markdown_is_rendered_and_sanitised(text, present, absent):
    html = markdown.render(text)

    assert present in html
    assert absent not in html


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("feat: rate limiting\nfix: auth timeout", ["feat: rate limiting", "fix: auth timeout"]),
        ("תכונה: הגבלת קצב\nתיקון: זמן קצוב", ["תכונה: הגבלת קצב", "תיקון: זמן קצוב"]),
    ],
)
def test_each_line_of_a_changelog_stays_a_line(text, lines):
    """CommonMark joins a paragraph's lines with a space: "feat: …" and "fix: …" ran together."""
    assert markdown.render(text) == f"<p>{lines[0]}<br>\n{lines[1]}</p>\n"


@pytest.mark.parametrize(
    "text",
    [
        "\n".join(f"- feat: change {n}" for n in range(1, 121)),
        "\n".join(f"feat: change {n}" for n in range(1, 121)),  # one paragraph, a line a change
        "\n".join(f"{n}. feat: change {n}" for n in range(1, 121)),
    ],
    ids=["list", "lines", "numbered"],
)
def test_a_long_changelog_shows_its_first_lines_and_folds_the_rest(text):
    html = markdown.render_folded(text)

    shown, folded = html.split("<details", 1)
    assert "feat: change 12<" in shown
    assert "feat: change 13<" not in shown
    assert "<summary>108 more lines</summary>" in folded
    for n in range(13, 121):
        assert f"feat: change {n}<" in folded
    assert folded.endswith("</details>")


def test_a_folded_changelog_is_sanitised_and_keeps_its_references():
    text = (
        "\n".join(f"- fix {n}" for n in range(1, 13))
        + "\n"
        + "\n".join(
            [
                "- see [the docs][docs]",
                "- <script>alert(1)</script>",
                *(f"- feat {n}" for n in range(5)),
                "",
                "[docs]: https://docs.example/a",
            ]
        )
    )

    folded = markdown.render_folded(text).split("<details", 1)[1]

    assert 'href="https://docs.example/a"' in folded
    assert "<script" not in folded


@pytest.mark.parametrize("lines", [1, 12, 16])
def test_a_short_changelog_is_not_folded(lines):
    text = "\n".join(f"- fix {n}" for n in range(lines))

    assert markdown.render_folded(text) == markdown.render(text)


# --- the values diff ----------------------------------------------------------------------------


def test_the_values_diff_is_the_change_set_value_makes():
    text = VALUES.format(service="nexo-be", environment="production", tag="2026.02.1")

    diff = values.diff(text, "image.tag", "2026.02.3", "helm/nexo-be/values-prod.yaml")

    assert diff.splitlines()[:2] == ["--- a/helm/nexo-be/values-prod.yaml", "+++ b/helm/nexo-be/values-prod.yaml"]
    assert '-  tag: "2026.02.1"' in diff.splitlines()
    assert '+  tag: "2026.02.3"' in diff.splitlines()
    assert sum(1 for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")) == 2


# --- the promotion page and the approve dialog --------------------------------------------------------


def test_the_promotion_page_shows_what_ships(shipping_world):
    world = shipping_world
    page = client_for(world["sam"]).get(world["promotion"].get_absolute_url()).content.decode()
    ships = page.split('id="what-ships"', 1)[1].split("</section>", 1)[0]

    assert [line.split('"')[0] for line in ships.split('data-version="')[1:]] == ["2026.02.3", "2026.02.2"]
    assert "after 2026.02.1, the one running now" in ships
    assert "<strong>auth</strong>" in ships
    assert "<script>" not in ships
    assert 'href="https://docs.example/rl" rel="noopener noreferrer nofollow"' in ships
    running, target = world["running"], world["target"]
    assert f'href="https://github.com/nexo-org/nexo-be/compare/{running.commit_sha}...{target.commit_sha}"' in ships
    assert target.image_digest in ships
    assert "e2e passed" in ships
    assert "security failed" in ships
    assert "1 high CVE" in ships
    assert '<span class="remove">-  tag: &quot;2026.02.1&quot;</span>' in ships
    assert '<span class="add">+  tag: &quot;2026.02.3&quot;</span>' in ships
    assert world["pipeline"].gitops.read("helm/nexo-be/values-prod.yaml").count("2026.02.1") == 1  # nothing written


@pytest.mark.parametrize(
    ("state", "went_out", "said"),
    [
        (PromotionState.VERIFIED, True, "after 2026.02.1, the one running before:"),
        (PromotionState.FAILED, True, "after 2026.02.1, the one running before:"),
        (PromotionState.REJECTED, False, "after 2026.02.1, the one running when it was requested:"),
    ],
)
def test_a_finished_promotion_does_not_call_the_release_it_replaced_the_one_running_now(
    shipping_world, state, went_out, said
):
    world = shipping_world
    promotion = world["promotion"]
    promotion.state = state
    if went_out:
        promotion.committed_at = promotion.deployed_at = promotion.finished_at = promotion.requested_at
    promotion.save()

    page = client_for(world["sam"]).get(promotion.get_absolute_url()).content.decode()
    ships = " ".join(page.split('id="what-ships"', 1)[1].split("</section>", 1)[0].split())

    assert said in ships
    assert "the one running now" not in ships


def test_the_approve_dialog_shows_what_ships(shipping_world):
    world = shipping_world
    url = f"/promotions/{world['promotion'].pk}/approve/"

    dialog = client_for(world["sam"]).get(url, headers=DIALOG).content.decode()

    assert '<h3 id="what-ships-title">What ships</h3>' in dialog
    assert 'data-version="2026.02.2"' in dialog
    assert "/compare/" in dialog
    assert '<span class="add">+  tag: &quot;2026.02.3&quot;</span>' in dialog


def test_the_values_diff_reads_the_file_as_the_branch_holds_it_now(shipping_world):
    world = shipping_world
    path = "helm/nexo-be/values-prod.yaml"
    world["pipeline"].gitops.write(path, VALUES.format(service="nexo-be", environment="production", tag="hand-edit"))

    diff = shipping.values_diff(world["promotion"])

    assert '-  tag: "hand-edit"' in diff.diff.splitlines()
    assert diff.read_at == world["pipeline"].gitops.commits()[0].hexsha


def test_a_git_host_that_hangs_costs_the_page_seconds_not_the_workers_minute(shipping_world, settings):
    settings.GITOPS_NETWORK_TIMEOUT_SECONDS = 600  # a worker's patience; the page must not wait that long
    with silent_git_host() as url:
        settings.GITOPS_REPO_URL = url
        diff = shipping.values_diff(shipping_world["promotion"])

    assert diff.diff == ""
    assert diff.error.startswith("The values diff cannot be shown now: Cannot reach the GitOps repository")
    assert f"did not complete in {shipping.VALUES_NETWORK_TIMEOUT_SECONDS} secs" in diff.error


def test_a_missing_values_file_is_said_instead_of_a_diff(shipping_world):
    world = shipping_world
    world["service"].values_path_template = "helm/{service}/elsewhere.yaml"
    world["service"].save()

    diff = shipping.values_diff(world["promotion"])

    assert diff.diff == ""
    assert diff.error == (
        "helm/nexo-be/elsewhere.yaml is not in the GitOps repository: the commit will fail until it is added."
    )


def test_a_rollback_says_which_releases_it_takes_out(shipping_world):
    world = shipping_world
    promotion = world["promotion"]
    promotion.state = PromotionState.VERIFIED
    promotion.save()
    rollback = type(promotion).objects.create(
        release=world["running"],
        environment=world["env"]["production"],
        kind=PromotionKind.ROLLBACK,
        previous_release=world["target"],
        state=PromotionState.AWAITING_APPROVAL,
    )

    shipped = shipping.what_ships(rollback, with_values_diff=False)

    assert shipped.going_back
    assert [release.version for release in shipped.releases] == ["2026.02.3", "2026.02.2"]
    assert (shipped.base_sha, shipped.head_sha) == (world["running"].commit_sha, world["target"].commit_sha)
    page = client_for(world["sam"]).get(rollback.get_absolute_url()).content.decode()
    assert "Going back from 2026.02.3 to 2026.02.1 takes out 2 releases:" in " ".join(page.split())

    rollback.state, rollback.deployed_at = PromotionState.VERIFIED, rollback.requested_at
    rollback.save()
    page = client_for(world["sam"]).get(rollback.get_absolute_url()).content.decode()
    assert "Going back from 2026.02.3 to 2026.02.1 took out 2 releases:" in " ".join(page.split())


# --- links out ----------------------------------------------------------------------------------


def test_the_promotion_page_links_to_argo_cd_the_gitops_commit_and_the_dashboard(shipping_world, settings):
    world = shipping_world
    settings.ARGOCD_UI_URL = "https://argocd.example.com/"
    settings.GITOPS_COMMIT_URL_TEMPLATE = "https://github.com/nexo-org/nexo-gitops/commit/{sha}"
    production = world["env"]["production"]
    production.dashboard_url_template = "https://grafana.example.com/d/svc?var-service={service}&var-env={environment}"
    production.save()
    staging_promotion = world["target"].promotions.get(environment=world["env"]["staging"])

    page = client_for(world["sam"]).get(world["promotion"].get_absolute_url()).content.decode()
    staging_page = client_for(world["sam"]).get(staging_promotion.get_absolute_url()).content.decode()

    assert 'href="https://argocd.example.com/applications/nexo-be-production"' in page
    assert 'href="https://grafana.example.com/d/svc?var-service=nexo-be&amp;var-env=production"' in page
    assert f'href="https://github.com/nexo-org/nexo-gitops/commit/{"c" * 40}"' in staging_page
    assert 'data-link="dashboard"' not in staging_page  # staging has no dashboard template


def test_no_link_without_its_setting(shipping_world):
    world = shipping_world
    page = client_for(world["sam"]).get(world["promotion"].get_absolute_url()).content.decode()

    assert 'data-link="argocd"' not in page
    assert 'data-link="dashboard"' not in page
    assert "nexo-be-production" in page


@pytest.mark.parametrize("template", ["javascript:alert(1)//{service}", "ftp://x/{service}", "not a url"])
def test_a_dashboard_template_must_be_an_http_address(environments, template):
    production = environments["production"]
    production.dashboard_url_template = template

    with pytest.raises(ValidationError, match="http:// or https://"):
        production.full_clean()


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_a_dashboard_template_that_is_not_http(environments):
    production = environments["production"]
    production.dashboard_url_template = "javascript:alert(1)"

    with pytest.raises(IntegrityError), transaction.atomic():
        production.save()


# --- the soak as charts ------------------------------------------------------------------------------


def test_the_soak_is_drawn_per_check_with_its_threshold_and_the_samples_folded_away(shipping_world):
    world = shipping_world
    promotion = world["target"].promotions.get(environment=world["env"]["staging"])
    start = promotion.deployed_at
    promotion.verification_started_at, promotion.verdict_at = start, start + timedelta(minutes=4)
    promotion.save()
    for minute, value in enumerate([0.001, 0.002, 0.05]):
        VerificationSample.objects.create(
            promotion=promotion,
            kind=SampleCheck.ERROR_RATE,
            target="sum(rate(x[1m]))",
            value=value,
            ok=value <= 0.01,
            taken_at=start + timedelta(minutes=minute),
            detail=f"{value:.4%}",
        )
        VerificationSample.objects.create(
            promotion=promotion,
            kind=SampleCheck.HEALTH_URL,
            target="https://nexo-be.staging/healthz",
            value=200,
            ok=True,
            taken_at=start + timedelta(minutes=minute),
            detail="200 OK",
        )

    page = client_for(world["sam"]).get(promotion.get_absolute_url()).content.decode()
    section = page.split('id="samples-title"', 1)[1].split("</section>", 1)[0]

    charts = section.split('<svg class="soak-chart"')[1:]
    assert len(charts) == 2
    assert 'aria-label="Error rate of 3 samples against a threshold of 1.00 %: 2 ok, 1 failed"' in section
    assert '<line class="threshold"' in charts[0]
    assert charts[0].count("<circle") == 3
    assert charts[1].count("<rect") == 3
    assert section.count("sum(rate(x[1m]))") == 1  # the query once, not on every row
    assert '<details id="samples-table">' in section
    assert "<summary>All 6 samples</summary>" in section
