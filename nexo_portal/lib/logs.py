"""Log lines as people or Loki-style tools read them, with the context they belong to, and no secrets.

`LOG_FORMAT=json` writes one JSON object per line: time, level, logger, message, the request id,
user, promotion id, service, environment and job id of the context (nexo_portal/lib/context.py),
and the traceback if any. Text, the default, adds the same fields after the message as key=value.

Whatever the format, `RedactSecrets` replaces in every line the values of the settings that are
secrets (tokens, passwords, signing secrets, the Slack webhook URL, the passwords inside
DATABASE_URL, REDIS_URL and EMAIL_URL), whatever follows `Authorization:` or `Bearer`, the
portal's own API tokens and Slack's token shapes, wherever they come from: a message, its
arguments, an exception's text or traceback.
"""

import json
import logging
import re
import traceback
from datetime import UTC, datetime
from urllib.parse import urlsplit

from . import context

REDACTED = "[redacted]"

# Settings whose values never appear in a log line.
SECRET_SETTINGS = (
    "SECRET_KEY",
    "AUDIT_CHECKPOINT_KEY",
    "ARGOCD_TOKEN",
    "ARGOCD_WEBHOOK_SECRET",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_WEBHOOK_URL",
    "SOCIAL_AUTH_GITHUB_ORG_SECRET",
    "INCIDENT_WEBHOOK_SECRET",
    "METRICS_TOKEN",
    "EMAIL_HOST_PASSWORD",
)
# Settings that are URLs with a password in them, or a {name: secret} mapping.
SECRET_URL_SETTINGS = ("REDIS_URL",)
SECRET_MAPPINGS = ("INCIDENT_WEBHOOK_SECRETS",)

_PATTERNS = [
    # Authorization and Proxy-Authorization headers, in any quoting: the scheme is kept, the rest goes.
    (re.compile(r"((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)(\w+\s+)?[^\s'\",}]+", re.I), r"\1\2" + REDACTED),
    (re.compile(r"\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.I), r"\1 " + REDACTED),
    (re.compile(r"\bnexo_[A-Za-z0-9_-]{20,}"), "nexo_" + REDACTED),  # the portal's API tokens
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]+"), "xox-" + REDACTED),  # Slack tokens
    (re.compile(r"https://hooks\.slack\.com/[^\s'\"]+"), "https://hooks.slack.com/" + REDACTED),
    (re.compile(r"(://[^:/@\s]+:)[^@/\s]+@"), r"\1" + REDACTED + "@"),  # passwords in URLs
    (
        re.compile(r"((?:password|passwd|secret|client_secret)['\"]?\s*[:=]\s*['\"]?)[^\s'\",&}]+", re.I),
        r"\1" + REDACTED,
    ),
]


def secret_values():
    """The secret values the settings hold now (short ones left out: they would redact ordinary words)."""
    from django.conf import settings

    values = [str(getattr(settings, name, "") or "") for name in SECRET_SETTINGS]
    for name in SECRET_MAPPINGS:
        values += [str(value) for value in (getattr(settings, name, None) or {}).values()]
    for name in SECRET_URL_SETTINGS:
        values.append(urlsplit(str(getattr(settings, name, "") or "")).password or "")
    for database in getattr(settings, "DATABASES", {}).values():
        values.append(str(database.get("PASSWORD") or ""))
    return sorted({value for value in values if len(value) >= 6}, key=len, reverse=True)


def redact(text):
    for secret in secret_values():
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Formats the record's message and traceback once, redacted, so no handler sees the originals."""

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log what there is rather than lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class AddContext(logging.Filter):
    """Puts the context's fields on the record (`record.context`), for either formatter."""

    def filter(self, record):
        record.context = dict(context.current())
        return True


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record):
        line = super().formatMessage(record)
        fields = getattr(record, "context", None) or {}
        if fields:
            line += " [" + " ".join(f"{key}={fields[key]}" for key in context.FIELDS if key in fields) + "]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the context's fields at the top level, as Loki's json parser expects."""

    def format(self, record):
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "context", None) or {})
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)
