"""Password guessing spread over many addresses: failed sign-ins counted per user name, whatever the
address, answered with a growing delay rather than a lock.

django-axes pauses a user name from one address (SIGN_IN_FAILURE_LIMIT, SIGN_IN_LOCKOUT_MINUTES); an
attacker with many addresses gets that many tries per address. So failures are also counted per
user name across addresses: past SIGN_IN_USER_FAILURE_LIMIT of them (without
SIGN_IN_USER_WINDOW_MINUTES of quiet in between), a sign-in as that name waits 1, 2, 4 … seconds
after the last failure, at most SIGN_IN_USER_MAX_DELAY_SECONDS, and an attempt made meanwhile is
answered 429 without its password being checked or counted. That caps guessing at about one
password a delay, wherever it comes from.

A lock per user name would let anyone lock a person out by failing on purpose; a short delay cannot
keep them out for long, and a browser that signed in as that person before carries a signed cookie
(`nexo_sign_in_device`, OWASP's "device cookie") and is not delayed at all. The counters live in the
cache (Redis); without it, only django-axes' per-address pause applies.
"""

import functools
import hashlib
import logging
import math
import time

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core import signing
from django.core.cache import cache
from django.dispatch import receiver
from django.shortcuts import render
from django.urls import get_script_prefix, reverse
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

DEVICE_COOKIE = "nexo_sign_in_device"
_SALT = "nexo_portal.sign_in_delay.device"
# A browser remembers this many people who signed in with it (a shared break-glass laptop).
_DEVICE_NAMES = 5


def _name_hash(username):
    # Hashed: neither the cache nor the cookie need hold user names, and any name makes a valid key.
    # Case-folded, so guessing under RITA and Rita counts against rita too.
    return hashlib.sha256(username.casefold().encode()).hexdigest()[:32]


def _key(kind, username):
    return f"sign-in:{kind}:{_name_hash(username)}"


def delay_after(failures):
    """Seconds to wait after the `failures`-th failure in a row for one user name (0: none)."""
    over = failures - settings.SIGN_IN_USER_FAILURE_LIMIT
    if over < 0:
        return 0
    return min(2 ** min(over, 30), settings.SIGN_IN_USER_MAX_DELAY_SECONDS)


def seconds_to_wait(username, now=None):
    """How long a sign-in as `username` must still wait (0: it may try now)."""
    try:
        until = cache.get(_key("wait", username))
    except RedisError as error:
        logger.warning("Sign-in delay unavailable (%s); only the per-address pause applies", error)
        return 0
    if until is None:
        return 0
    return max(0, math.ceil(until - (now or time.time())))


def record_failure(username, now=None):
    """Count a failed sign-in as `username`; returns the delay it starts."""
    window = settings.SIGN_IN_USER_WINDOW_MINUTES * 60
    try:
        failures_key = _key("failures", username)
        cache.add(failures_key, 0, timeout=window)
        failures = cache.incr(failures_key)
        cache.touch(failures_key, timeout=window)  # counted until a quiet window has passed
        delay = delay_after(failures)
        if delay:
            cache.set(_key("wait", username), (now or time.time()) + delay, timeout=window)
        return delay
    except (RedisError, ValueError) as error:  # ValueError: the counter expired between add and incr
        logger.warning("Sign-in failure not counted per user name (%s)", error)
        return 0


def is_known_device(request, username):
    """Whether this browser signed in as `username` before (it carries the signed device cookie)."""
    return _name_hash(username) in _device_names(request)


def _device_names(request):
    try:
        names = signing.loads(request.COOKIES.get(DEVICE_COOKIE, ""), salt=_SALT)
    except signing.BadSignature:
        return []
    return names if isinstance(names, list) else []


def _sign_in_paths():
    # Asked on every POST (a registration, a webhook): reversed once per script prefix, not each time.
    return _sign_in_paths_under(get_script_prefix())


@functools.cache
def _sign_in_paths_under(script_prefix):
    return {reverse("login"), reverse("admin:login")}


class SignInDelayMiddleware:
    """Answers a password sign-in (the portal's form and the admin's) that must still wait with 429, and
    gives a browser that signed in its device cookie."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST" and request.path in _sign_in_paths():
            username = request.POST.get("username", "")
            request.nexo_sign_in_known_device = bool(username) and is_known_device(request, username)
            wait = seconds_to_wait(username) if username and not request.nexo_sign_in_known_device else 0
            if wait:
                response = render(
                    request, "registration/sign_in_delayed.html", {"username": username, "wait": wait}, status=429
                )
                response["Retry-After"] = str(wait)
                return response
        response = self.get_response(request)
        signed_in_as = getattr(request, "nexo_signed_in_as", None)
        if signed_in_as:
            names = [name for name in _device_names(request) if name != _name_hash(signed_in_as)]
            names = [_name_hash(signed_in_as), *names][:_DEVICE_NAMES]
            response.set_cookie(
                DEVICE_COOKIE,
                signing.dumps(names, salt=_SALT),
                max_age=365 * 24 * 3600,
                secure=settings.SESSION_COOKIE_SECURE,
                httponly=True,
                samesite="Lax",
            )
        return response


@receiver(user_login_failed, dispatch_uid="nexo_sign_in_delay_failure")
def _count_failure(sender, credentials, request=None, **kwargs):
    username = credentials.get("username") if isinstance(credentials, dict) else None
    if request is None or not username or getattr(request, "nexo_sign_in_known_device", False):
        return  # a person's own typo in a browser they signed in with does not slow them down
    record_failure(username)


@receiver(user_logged_in, dispatch_uid="nexo_sign_in_delay_success")
def _remember_device(sender, request, user, **kwargs):
    if request is not None and request.method == "POST" and request.path in _sign_in_paths():
        request.nexo_signed_in_as = user.get_username()
