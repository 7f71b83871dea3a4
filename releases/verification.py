"""The soak: samples taken during a promotion's verification window, and the verdict on them.

Every sample is stored (VerificationSample), so the verdict is taken on the whole window
and the promotion page can show what was seen. The verdict at the end of the window:

- error rate (Prometheus): the samples above the threshold stay within the environment's
  failure limit, and at least one sample during the window had data — NaN (no traffic) or an
  empty result is "no data", a Prometheus error an "error", never a pass;
- health and smoke URLs: the non-2xx answers of each URL stay within the failure limit;
- Argo CD: a sample is OK when the application runs this promotion's GitOps commit, or a later
  commit of the branch containing it whose values file still names this release (Argo CD reports
  what the branch resolved to; the sync step's rule, ApplicationStatus.runs with contains_commit),
  and is Healthy. The samples that found it Degraded or Missing stay
  within the failure limit, and at least one sample during the window was OK: Unknown, Progressing
  and Suspended judge nothing and are no data, as NaN is for the error rate. A sample that found
  another revision running ("runs 1a2b3c4d5e6f, not this release's commit 9f8e7d6c5b4a": an
  `argocd app rollback`, a sync to another revision), or a later one that put another tag in the
  values file ("runs 3c4d5e6f7a8b, whose values file names 2026.12.4, not this release's
  2026.12.5": a `git revert` of ours pushed to the branch, a tag written over it by hand), fails
  the soak at once, whatever the failure limit, since every sample after it measures that
  revision; and it is held, not rolled back automatically (found_another_revision). Git unable to
  tell whether a later revision contains ours is a measurement error;
- CI checks the environment requires (e2e, performance, security…): the latest result
  reported for this release there passed.

Fail fast, as Argo Rollouts' analysis does: after every round of samples, a check whose failed
samples pass the environment's `failure_limit` (0 by default: the first failed sample), or
whose measurement errors in a row (Prometheus or Argo CD could not answer) pass its
`consecutive_error_limit` (4 by default), fails the soak at once; the verdict names the limit.

A soak with gaps is no verdict. Rounds of samples keep to the window's grid (one at the start,
one every `sample_interval_seconds`, one at the verdict: window // interval + 1 expected). When
a worker or RQ's scheduler was gone for part of the window, fewer rounds were taken: with less
than MIN_ROUNDS_SHARE (80 %) of them at the verdict's time, the soak is extended once by the time
of the missing rounds (at most its window), and audited; still short at the end, it fails as
"not enough samples: 3 of 11 expected rounds (at least 9 needed)". It never passes on the one
or two rounds taken either side of a gap. (CI results alone are not sampled and have no rounds.)
A slot of the grid keeps one round (`take_round`): a second run of the step in it — a worker
whose lease expired while it sampled, and the run the reconciler started in its place — drops
its own, which would count a failure twice against the limit and fill a gap in the rounds.

"During the window" leaves out a check's first sample once others followed it, when there is a
window: the first round is taken the instant the deployment became healthy, which the sync step
had seen already. A soak whose
every later sample failed to be taken (Argo CD answering 503 for the rest of it, within the
consecutive error limit) measured nothing and does not pass on that first one: it fails as not
measured, and is held rather than rolled back (found_nothing_against).

With none of these configured the window is only a timer, and the promotion says so
("not configured") instead of claiming it passed.

Every sample measures only the deployment being verified, from the moment it became healthy
(`promotion.deployed_at`); a rollback is never judged on the release it took out:

- `{range}` in the query template (`rate(x[{range}])`) is filled with the time the deployment
  has been healthy, as a PromQL duration in seconds (`95s`), at most the template's longest
  range (`{range:10m}`; 5m for a plain `{range}`). Until it has been healthy for
  VERIFICATION_MIN_RANGE_SECONDS (30 s: two scrapes for rate()) the sample waits;
- a query with a fixed range (`[5m]`) waits until the deployment has been healthy that long:
  "waiting: the query's 5m window still covers the previous release". Before that, its window
  would mix the release before into the verdict. The admin refuses a fixed range longer than
  a soak window, and a `{range}` in an environment whose soak is shorter than
  VERIFICATION_MIN_RANGE_SECONDS, since every sample of that soak would wait: for the
  environment's query and a service's own (Environment.clean, Service.clean).

A waiting sample has no data and is no error; it counts as a round taken.

A rollback soaks for its environment's `rollback_verification_window` (2 minutes by default)
instead of the `verification_window`. A zero window does not soak: one round of samples decides
at once, and an error rate, which has had no time to measure, is not judged (the verdict says so).
"""

import logging
import math
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction, AuditEvent
from environments import prometheus as promql
from environments.argocd import ApplicationStatus, ArgoCD, ArgoCDError, Health, same_revision
from environments.probes import probe
from environments.prometheus import Prometheus, PrometheusError
from nexo_portal.lib.words import listed

from . import argocd_health
from .gitops.repo import contains_commit
from .models import (
    ERROR,
    NO_DATA,
    WAITING,
    CheckResult,
    Promotion,
    PromotionState,
    SampleCheck,
    VerificationSample,
)

logger = logging.getLogger(__name__)

UNHEALTHY = {Health.DEGRADED, Health.MISSING}
# Argo CD's health statuses that judge nothing either way, as NaN does for the error rate: no data.
UNSETTLED = {
    Health.UNKNOWN: "Argo CD could not assess it",
    Health.PROGRESSING: "the rollout has not settled",
    Health.SUSPENDED: "the rollout is paused",
}
# How an Argo CD sample that found another revision running begins its detail.
RUNS = "runs "


# A soak must have taken this share of the rounds of samples its window holds to be judged.
MIN_ROUNDS_SHARE = 0.8
SAMPLED = ("error_rate", "health_urls", "argocd")


@dataclass
class Verdict:
    passed: bool
    configured: bool
    reasons: list = field(default_factory=list)
    # Set when the soak missed rounds: no verdict yet, the window goes on this much longer.
    extend_by: timedelta | None = None

    @property
    def summary(self):
        return "; ".join(self.reasons)


def configured_checks(promotion):
    service, environment = promotion.service, promotion.environment
    return {
        "error_rate": bool(Prometheus.from_settings() and service.prometheus_query(environment).strip()),
        "health_urls": bool(service.health_urls(environment)),
        "argocd": ArgoCD.from_settings() is not None,
        "ci_checks": bool(environment.required_checks),
    }


def is_configured(promotion):
    return any(configured_checks(promotion).values())


def take_round(promotion, now=None):
    """The verify step's round of samples: stored unless its slot of the grid has a round already
    (returns the new samples, or an empty list when it was dropped), or None when the promotion
    stopped verifying while it was observed (stopped, or its verdict given by another run)."""
    now = now or timezone.now()
    samples = observe(promotion, now)  # slow (HTTP), so before the promotion's lock
    start, end = round_slot(promotion, now)
    with transaction.atomic():
        # Two runs of the step for one slot store in turn: the second sees the first's round.
        if not (
            Promotion.objects.select_for_update(of=("self",))
            .filter(pk=promotion.pk, state=PromotionState.VERIFYING)
            .exists()
        ):
            logger.info("Promotion %s stopped verifying while its round was observed; not kept", promotion.pk)
            return None
        taken = promotion.samples.filter(taken_at__gte=start)
        if (taken.filter(taken_at__lt=end) if end else taken).exists():
            logger.warning(
                "Dropped a second round of samples of promotion %s taken at %s: its slot of the soak's grid has one",
                promotion.pk,
                now.isoformat(),
            )
            return []
        return VerificationSample.objects.bulk_create(samples)


def round_slot(promotion, at):
    """[start, end) of the slot of the soak's grid that `at` is in (end None: the verdict's own slot,
    from `verdict_at` on); rounds keep to that grid (next_round_in)."""
    if at >= promotion.verdict_at:
        return promotion.verdict_at, None
    interval = timedelta(seconds=promotion.environment.sample_interval_seconds)
    start = promotion.verification_started_at + (at - promotion.verification_started_at) // interval * interval
    return start, min(start + interval, promotion.verdict_at)


def take_samples(promotion, now=None):
    """Observe everything configured once, store what was seen, return the new samples."""
    return VerificationSample.objects.bulk_create(observe(promotion, now))


def observe(promotion, now=None):
    """One sample of everything configured, taken at `now`, not stored."""
    service, environment = promotion.service, promotion.environment
    now = now or timezone.now()
    samples = []
    prometheus = Prometheus.from_settings()
    query = service.prometheus_query(environment).strip()
    if prometheus and query:
        samples.append(_error_rate_sample(promotion, prometheus, query, now))
    for url in service.health_urls(environment):
        result = probe(url)
        samples.append(
            VerificationSample(
                promotion=promotion,
                kind=SampleCheck.HEALTH_URL,
                target=url,
                value=result.status,
                ok=result.ok,
                detail=result.detail[:500],
            )
        )
    argocd = ArgoCD.from_settings()
    if argocd:
        samples.append(_argocd_sample(promotion, argocd, service.argocd_app(environment), now))
    for sample in samples:
        sample.taken_at = now  # one round, one time
    return samples


def _argocd_sample(promotion, argocd, application, now):
    sample = VerificationSample(promotion=promotion, kind=SampleCheck.ARGOCD_HEALTH, target=application)
    try:
        status = ApplicationStatus.from_application(argocd.get_application(application))
    except ArgoCDError as error:
        sample.ok, detail = None, f"{ERROR}{error}"
    else:
        sample.ok, detail = _judge_application(status, promotion)
        # What Argo CD says of the place now, as a reconciler round would: the board shows the health
        # the soak sees (a release gone Degraded in its soak is Degraded there, not Healthy as it synced).
        argocd_health.note_in_place(promotion.service, promotion.environment, status.health, now)
    sample.detail = detail[:500]
    return sample


def _judge_application(status, promotion):
    """(ok, detail) of an Argo CD sample. OK when the application runs the promotion's GitOps commit, or a
    later one containing it whose values file still names the release (the sync step's rule,
    ApplicationStatus.runs), Healthy; failed when it runs a revision without ours, or one that put another
    tag in the values file (a revert pushed to the branch), or is Degraded or Missing; no data when its
    health judges nothing (UNSETTLED); an error when Git could not tell whether a later revision contains ours."""
    ours, version = promotion.gitops_commit_sha, promotion.release.version
    service, environment = promotion.service, promotion.environment
    running = status.running_revision
    includes = contains_commit(ours, service.values_path(environment), service.image_tag_key, version)
    if not running:
        return None, f"{NO_DATA}Argo CD reports no revision running"
    if not status.runs(ours, includes):
        if includes.unanswered:
            return None, (
                f"{ERROR}could not tell whether {running[:12]}, which Argo CD runs, contains this release's "
                f"commit {ours[:12]} ({includes.why_unanswered})"
            )
        if includes.overwritten:
            return False, (
                f"{RUNS}{running[:12]}, whose values file names {includes.names_instead}, not this release's {version}"
            )
        return False, f"{RUNS}{running[:12]}, not this release's commit {ours[:12]}"
    if status.health == Health.HEALTHY:
        later = "" if same_revision(running, ours) else f", which contains this release's commit {ours[:12]}"
        return True, f"{Health.HEALTHY}, running {running[:12]}{later}"
    if status.health in UNHEALTHY:
        return False, status.health
    return None, f"{NO_DATA}health {status.health}: {UNSETTLED.get(status.health, 'not Healthy')}"


def healthy_for(promotion, now):
    """How long the deployment under verification has been healthy: what its samples may measure."""
    return now - (promotion.deployed_at or promotion.verification_started_at or now)


def error_rate_query(promotion, template, now):
    """(the query to ask now, None) — or (None, why the sample waits): it may only measure this deployment.

    `{range}` is filled with the time since the deployment became healthy, clipped to the range
    the template allows and waiting until VERIFICATION_MIN_RANGE_SECONDS have passed. A query with
    a fixed range ([5m]) waits until the deployment has been healthy that long.
    """
    healthy = healthy_for(promotion, now)
    if promql.has_range_placeholder(template):
        shortest = timedelta(seconds=settings.VERIFICATION_MIN_RANGE_SECONDS)
        if healthy < shortest:
            return None, (
                f"{WAITING}the deployment has been healthy for {promql.describe_duration(healthy)}; "
                f"{{range}} is at least {promql.describe_duration(shortest)}"
            )
        return promql.fill_range(template, healthy), None
    longest = promql.longest_range(template)
    if longest is not None and healthy < longest:
        before = "the previous release" if promotion.previous_release_id else "the time before this deployment"
        return None, (
            f"{WAITING}the query's {promql.describe_duration(longest)} window still covers {before} "
            f"(healthy for {promql.describe_duration(healthy)}; write [{{range}}] in the query to measure sooner)"
        )
    return template, None


def _error_rate_sample(promotion, prometheus, template, now):
    threshold = float(promotion.environment.error_rate_threshold)
    sample = VerificationSample(promotion=promotion, kind=SampleCheck.ERROR_RATE, target=template)
    try:
        query, waiting = error_rate_query(promotion, template, now)
    except ValueError as error:
        sample.ok, sample.detail = None, f"{ERROR}the query template's {{range}}: {error}"[:500]
        return sample
    if query is None:
        sample.ok, sample.detail = None, waiting[:500]
        return sample
    sample.target = query
    try:
        value = prometheus.instant_value(query)
    except PrometheusError as error:
        sample.ok, sample.detail = None, f"{ERROR}{error}"[:500]
        return sample
    if value is None:
        sample.ok, sample.detail = None, f"{NO_DATA}the query returned no series"
    elif math.isnan(value):
        sample.ok, sample.detail = None, f"{NO_DATA}NaN (no traffic in the window of the query)"
    else:
        sample.value = value
        sample.ok = value <= threshold
        sample.detail = f"{value:.4%} {'≤' if sample.ok else '>'} {threshold:.2%}"
    return sample


def _waited(sample):
    return sample.ok is None and sample.detail.startswith(WAITING)


def _kind_of(promotion):
    return "rollbacks" if promotion.is_rollback else "promotions"


def _series(samples):
    """The samples of each check, oldest first: the error rate, each health URL, Argo CD health."""
    series = {}
    for sample in samples:
        key = (sample.kind, sample.target if sample.kind == SampleCheck.HEALTH_URL else "")
        series.setdefault(key, []).append(sample)
    return series


def _runs_another_revision(sample):
    return sample.kind == SampleCheck.ARGOCD_HEALTH and sample.ok is False and sample.detail.startswith(RUNS)


def _another_revision(series):
    """The sentence for Argo CD samples that found a revision without ours running (or one that put another
    tag in the values file), or "" if none did."""
    elsewhere = [s for s in series if _runs_another_revision(s)]
    if not elsewhere:
        return ""
    newest = elsewhere[-1]
    return (
        f"Argo CD found {newest.target} running {newest.detail.removeprefix(RUNS)}, in {len(elsewhere)} of "
        f"{len(series)} samples: what runs was changed outside the portal (an argocd app rollback, a sync to "
        "another revision, a commit putting another tag in the values file), so the soak no longer measured "
        "this release"
    )


def _failed(kind, samples, failed):
    if kind == SampleCheck.ERROR_RATE:
        with_data = [s for s in samples if s.ok is not None]
        worst = max(failed, key=lambda s: s.value)
        return f"error rate above the threshold in {len(failed)} of {len(with_data)} samples (worst {worst.detail})"
    if kind == SampleCheck.HEALTH_URL:
        return f"{failed[0].target} failed {len(failed)} time(s): {failed[0].detail}"
    return f"Argo CD reported {failed[0].target} {failed[0].detail} in {len(failed)} of {len(samples)} samples"


def _longest_error_run(samples):
    """The longest run of measurement errors in a row; a sample that waited neither counts nor breaks it."""
    longest, run = [], []
    for sample in samples:
        if _waited(sample):
            continue
        run = [*run, sample] if sample.ok is None and sample.detail.startswith(ERROR) else []
        longest = run if len(run) > len(longest) else longest
    return longest


def _limits_passed(promotion, samples):
    """{check: the sentences of the limits its samples passed}: any of them fails the soak at once."""
    environment = promotion.environment
    passed = {}
    for (kind, target), series in _series(samples).items():
        # Not a failure the limit tolerates: every sample from then on measures the other revision.
        sentences = [sentence] if (sentence := _another_revision(series)) else []
        failed = [s for s in series if s.ok is False and not _runs_another_revision(s)]
        if len(failed) > environment.failure_limit:
            sentences.append(f"{_failed(kind, series, failed)}, past the failure limit of {environment.failure_limit}")
        errors = _longest_error_run(series)
        if len(errors) > environment.consecutive_error_limit:
            name = target or SampleCheck(kind).label.lower()
            sentences.append(
                f"{name} could not be measured {len(errors)} times in a row, past the consecutive error limit of "
                f"{environment.consecutive_error_limit} ({errors[-1].detail})"
            )
        if sentences:
            passed[(kind, target)] = sentences
    return passed


def _during_window(promotion, series):
    """The samples of a check that measured the soak's window: all but the first, once others followed it.

    The first round is taken the instant the deployment became healthy, which the sync step had seen
    already: a soak whose every later sample failed to be taken (Argo CD answering 503 for the rest of
    the window, within the consecutive error limit) measured nothing, and must not pass on that one.
    Without a window the one round is the soak; a soak that failed fast at its first round has only it."""
    return series[1:] if promotion.verification_window and len(series) > 1 else series


def _measured(kind, samples):
    """Whether these samples judged the check: any with data; for Argo CD, one that found the release
    running, Healthy (found only Degraded or Missing, within the failure limit, it never was)."""
    if kind == SampleCheck.ARGOCD_HEALTH:
        return any(sample.ok for sample in samples)
    return any(sample.ok is not None for sample in samples)


def soak_results(promotion):
    """The soak's verdict on each check it sampled, for the audit record: `passed` (failures, if any,
    within the limits), `failed` (a limit passed, or Argo CD never found it Healthy) or `no_data` (no
    sample measured anything during the window). Keys name the check: `soak:error_rate`,
    `soak:argocd_health`, `soak:health_url:<url>`."""
    samples = list(promotion.samples.all())
    over_limit = _limits_passed(promotion, samples)
    results = {}
    for (kind, target), series in _series(samples).items():
        name = f"soak:{kind}" + (f":{target}" if target else "")
        during = _during_window(promotion, series)
        if (kind, target) in over_limit:
            results[name] = "failed"
        elif all(sample.ok is None for sample in during):
            results[name] = "no_data"
        elif not _measured(kind, during):
            results[name] = "failed"
        else:
            results[name] = "passed"
    return results


def ci_results(promotion):
    """The CI results the verdict took, for the audit record: `passed` or `failed` (the newest result of
    each check the environment requires), or `no_data` for one CI had not reported."""
    return {
        name: "no_data" if result is None else "passed" if result.passed else "failed"
        for name, result in required_results(promotion.release, promotion.environment).items()
    }


def limits_passed(promotion):
    """Why the soak fails already, one sentence per limit its samples passed; empty while none is."""
    return [
        sentence
        for sentences in _limits_passed(promotion, list(promotion.samples.all())).values()
        for sentence in sentences
    ]


def found_nothing_against(promotion):
    """Whether a failed soak failed only for want of measurements: a checker out of reach past the
    consecutive error limit, no error-rate data, too few rounds, a CI check not reported (yet). No
    sample found the release failing and no CI check the environment requires was reported failing.

    Such a failure says nothing against the release: rolling it back automatically would take out a
    release that may be good (a Prometheus restart would roll back everything soaking), and the
    rollback's own soak would meet the same outage. A hold says why instead (transitions.fail).
    """
    if promotion.samples.filter(ok=False).exists():
        return False
    return all(
        result.passed for result in required_results(promotion.release, promotion.environment).values() if result
    )


def required_results(release, environment):
    """{check: the CI result of `release` that counts for it} for each check `environment` requires, in
    the order it names them; None where CI has not reported one yet. The newest result of a check counts."""
    newest = {
        result.name: result
        for result in CheckResult.objects.filter(
            release=release, environment=environment, name__in=environment.required_checks
        ).newest_per_check()
    }
    return {name: newest.get(name) for name in environment.required_checks}


def failed_required(results, environment):
    """Of `results` (each the one that counts for its check: the newest), the failed ones of the checks
    `environment` requires, in the order it names them."""
    failed = {result.name: result for result in results if not result.passed}
    return [failed[name] for name in environment.required_checks if name in failed]


def failing_checks(release, environment):
    """The checks `environment` requires whose result that counts for `release` failed.

    The newest result of a check counts, after the verdict too: a release verified there whose check
    then fails again (a security scan run every night finds a CVE) is no longer verified there for
    what comes next (policy.why_not_go_on), until CI reports a passing rerun. What runs there is not
    rolled back by it: a rerun may pass, and whether to roll back is for people to decide.
    """
    return failed_required(
        [result for result in required_results(release, environment).values() if result], environment
    )


def describe_failed(results):
    """("e2e and security", "e2e: https://ci.example/runs/87; security: CVE-2026-1234 critical") for failed
    CI results, the checks and what CI said of them: the words the board, the matrix and the refusal share."""
    names = [result.name for result in results]
    named = listed(names)

    def details(result):
        return ", ".join(part for part in (result.summary, result.url) if part)

    if len(results) == 1:
        said = details(results[0])
    else:
        said = "; ".join(f"{result.name}: {details(result)}" for result in results if details(result))
    return named, said


def found_another_revision(promotion):
    """Whether a sample found Argo CD running a revision without this promotion's commit, or with it but
    another tag in the values file: someone or something outside the portal chose what runs (`argocd app
    rollback`, a sync to another revision, another targetRevision, a revert pushed to the branch). An
    automatic rollback would sync or commit over their choice, or be refused behind their sync: a hold
    says why instead (transitions.fail)."""
    return promotion.samples.filter(kind=SampleCheck.ARGOCD_HEALTH, ok=False, detail__startswith=RUNS).exists()


@dataclass
class Rounds:
    """Rounds of samples a soak took, against those its window holds."""

    taken: int
    expected: int

    @property
    def needed(self):
        return math.ceil(self.expected * MIN_ROUNDS_SHARE)

    @property
    def short(self):
        return self.taken < self.needed

    def __str__(self):
        return f"{self.taken} of {self.expected} expected rounds (at least {self.needed} needed)"


def rounds(promotion, series):
    """One round at the start and one every sample interval, the verdict's included; each round
    samples every check once, so the longest series counts them (a waiting sample is a round taken)."""
    interval = promotion.environment.sample_interval_seconds
    expected = int(promotion.verification_window.total_seconds() // interval) + 1
    return Rounds(taken=max((len(samples) for samples in series.values()), default=0), expected=expected)


def extension(promotion, counted):
    """How much longer a soak that missed rounds goes on: the time of the rounds missing, at most its
    window; None when it was extended once already."""
    extended = AuditEvent.objects.for_promotion(promotion).filter(action=AuditAction.PROMOTION_SOAK_EXTENDED)
    if extended.exists():
        return None
    missing = timedelta(seconds=(counted.expected - counted.taken) * promotion.environment.sample_interval_seconds)
    return min(missing, promotion.verification_window)


def next_round_in(promotion, now):
    """Until the next round: rounds keep to the window's grid (start + k × interval), so a slow round
    does not push every later one back, and never past the verdict."""
    interval = promotion.environment.sample_interval_seconds
    elapsed = (now - promotion.verification_started_at).total_seconds()
    return min(timedelta(seconds=interval - elapsed % interval), promotion.verdict_at - now)


def verdict(promotion):
    checks = configured_checks(promotion)
    samples = list(promotion.samples.all())
    series = _series(samples)
    over_limit = _limits_passed(promotion, samples)
    reasons = [sentence for sentences in over_limit.values() for sentence in sentences]
    passed = not reasons

    counted = rounds(promotion, series)
    if passed and any(checks[name] for name in SAMPLED) and counted.short:
        extend_by = extension(promotion, counted)
        missing = "a worker or RQ's scheduler was gone for part of the window"
        if extend_by is not None:
            reason = f"not enough samples yet: {counted}; {missing}"
            return Verdict(passed=False, configured=True, reasons=[reason], extend_by=extend_by)
        passed = False
        reasons.append(f"not enough samples: {counted}, even with the soak extended once; {missing}")
    tolerated = f"within the failure limit of {promotion.environment.failure_limit}"

    if checks["error_rate"] and (SampleCheck.ERROR_RATE, "") not in over_limit:
        rates = series.get((SampleCheck.ERROR_RATE, ""), [])
        with_data = [s for s in rates if s.ok is not None]
        breaches = [s for s in with_data if not s.ok]
        if rates and not with_data and not promotion.verification_window and all(_waited(s) for s in rates):
            # A policy without a soak (rollbacks, say): a rate has had no time to measure anything.
            reasons.append(f"error rate not judged: no soak here for {_kind_of(promotion)}, and a rate needs time")
        elif not _measured(SampleCheck.ERROR_RATE, _during_window(promotion, rates)):
            passed = False
            last = rates[-1].detail if rates else "no sample was taken"
            reasons.append(f"no error-rate data during the window ({last})")
        elif breaches:
            reasons.append(f"{_failed(SampleCheck.ERROR_RATE, rates, breaches)}, {tolerated}")
        else:
            reasons.append(f"error rate within the threshold in all {len(with_data)} samples")

    if checks["health_urls"]:
        probed = {key: probes for key, probes in series.items() if key[0] == SampleCheck.HEALTH_URL}
        if not probed:
            passed = False
            reasons.append("no health URL was probed")
        for key, probes in probed.items():
            failed = [s for s in probes if not s.ok]
            if failed and key not in over_limit:
                reasons.append(f"{_failed(SampleCheck.HEALTH_URL, probes, failed)}, {tolerated}")
        if probed and not any(not s.ok for probes in probed.values() for s in probes):
            count = sum(len(probes) for probes in probed.values())
            reasons.append(f"health URLs answered 2xx in all {count} probes")

    if checks["argocd"] and (SampleCheck.ARGOCD_HEALTH, "") not in over_limit:
        observed = series.get((SampleCheck.ARGOCD_HEALTH, ""), [])
        during = _during_window(promotion, observed)
        unhealthy = [s for s in observed if s.ok is False]
        if observed and not _measured(SampleCheck.ARGOCD_HEALTH, during):
            # Fewer errors than the consecutive error limit, but no answer during the window (a short
            # window, an application renamed or deleted in Argo CD, argocd-server restarting), or only a
            # health that judges nothing (Unknown, Progressing), or Degraded within the failure limit:
            # as for the error rate, no data is never a pass, nor is the OK sample of the first round alone.
            passed = False
            last = observed[-1]
            at_start = ", only at its start" if observed[0].ok and len(during) < len(observed) else ""
            if all(s.detail.startswith(ERROR) for s in during):
                reasons.append(f"Argo CD never answered for {last.target} during the window{at_start} ({last.detail})")
            else:
                reasons.append(f"Argo CD never found {last.target} Healthy during the window{at_start} ({last.detail})")
        elif unhealthy:
            reasons.append(f"{_failed(SampleCheck.ARGOCD_HEALTH, observed, unhealthy)}, {tolerated}")

    for name, result in required_results(promotion.release, promotion.environment).items():
        if result is None:
            passed = False
            reasons.append(f"no {name} result was reported by CI")
        elif not result.passed:
            passed = False
            reasons.append(f"{name} failed" + (f" ({result.url})" if result.url else ""))
        else:
            reasons.append(f"{name} passed")

    configured = any(checks.values())
    if not configured:
        reasons.append("nothing is configured to verify: the soak was only a timer")
    return Verdict(passed=passed, configured=configured, reasons=reasons)
