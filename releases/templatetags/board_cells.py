"""The board's rows and cells, built in Python as the admin builds its change-list rows.

A board shows hundreds of cells and is refreshed every few seconds by everyone who keeps it
open: a template per cell, or format_html with its lazy-string checks, costs more than the rest
of the page together. Every value goes through `_html`, which escapes it as Django's `escape` does.
"""

import re
from contextlib import suppress
from functools import lru_cache
from html import escape
from threading import Lock

from cachetools import LRUCache
from django import template
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


# Most values (versions, names, URLs of slugs, numbers) have nothing to escape: one search says so.
_special = re.compile(r"[&<>\"']").search


def _escaped(value):
    if isinstance(value, SafeString):
        return value
    text = str(value)
    return escape(text) if _special(text) else text


def _html(markup, *values):
    """format_html for plain strings: each value escaped unless it is already safe."""
    return markup.format(*map(_escaped, values))


# Badges repeat from cell to cell ("verified", "Healthy"): each distinct one is built once.
_badges = {}


def _shorten(text, limit=120):
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _badge(badge):
    if badge is None:
        return ""
    key = (badge.label, badge.tone, badge.title)
    if key not in _badges:
        if len(_badges) > 4096:
            _badges.clear()
        if badge.title:
            _badges[key] = _html('<span class="badge {}" title="{}">{}</span>', badge.tone, badge.title, badge.label)
        else:
            _badges[key] = _html('<span class="badge {}">{}</span>', badge.tone, badge.label)
    return _badges[key]


def _action(action):
    # data-confirm: portal.js opens the link's confirmation as a dialog; without JavaScript it is a page.
    if action.note:
        return _html(
            '<a class="button small {}" href="{}" data-confirm data-action="{}" title="{}">{}</a>',
            action.tone,
            action.url,
            action.kind,
            action.note,
            action.label,
        )
    return _html(
        '<a class="button small {}" href="{}" data-confirm data-action="{}">{}</a>',
        action.tone,
        action.url,
        action.kind,
        action.label,
    )


def _unavailable(cell, actions):
    """The actions the reader may not take, folded behind one "why not?": each opens its confirmation,
    which says why in full."""
    parts = [
        _html('<details class="why-not" id="why-not-{}"><summary>', cell.place),
        _html(
            '{} unavailable<span class="visually-hidden"> to you: {}</span> · <span class="why">why not?</span>',
            len(actions),
            ", ".join(action.label for action in actions),
        ),
        "</summary><ul>",
    ]
    for action in actions:
        parts.append(
            _html(
                '<li><a class="unavailable" href="{}" data-confirm data-action="{}" title="{}">{}</a>{}</li>',
                action.url,
                action.kind,
                action.why_not or "Open it to see why it is not available to you",
                action.label,
                SafeString(_html(": {}", action.why_not) if action.why_not else ""),
            )
        )
    parts.append("</ul></details>")
    return "".join(parts)


# Rows as rendered, by everything they show (BoardRow.key), in each process. A board is rendered
# again when anything on it changed (else the refresh is a 304), and then mostly the same rows: the
# rows a change did not touch are taken from here. Bounded by the characters it holds
# (BOARD_KEPT_ROWS_MB; ~3.4 KB a row, about three times that with its key).
def _kept_rows():
    return LRUCache(maxsize=settings.BOARD_KEPT_ROWS_MB * 2**20, getsizeof=len)


_rendered_rows = _kept_rows()
_rendered_rows_lock = Lock()  # cachetools' caches are not thread-safe: gthread workers share them


@receiver(setting_changed)
def _forget_rendered_rows(**kwargs):
    # Settings are constant in a running portal; tests change them (URLs, Argo CD, the time zone).
    global _rendered_rows
    with _rendered_rows_lock:
        _rendered_rows = _kept_rows()


@register.simple_tag
def board_rows(rows):
    """Every <tr> of the board's body: its service, then its cells; a row shown before as it was."""
    return mark_safe("".join(_kept_row(row) for row in rows))


def _kept_row(row):
    key = row.key
    with _rendered_rows_lock, suppress(KeyError):
        return _rendered_rows[key]  # one lookup; .get() makes two
    html = _board_row(row)
    with _rendered_rows_lock, suppress(ValueError):  # a row larger than the whole cache is not kept
        _rendered_rows[key] = html
    return html


def _board_row(row):
    service = row.service
    parts = [
        _html(
            '<tr data-service="{}"><th scope="row" class="service-head"><a href="{}">{}</a> '
            '<span class="muted small">{}</span></th>',
            service.name,
            row.filter_url,
            service.name,
            service.team.name if service.team_id else "no owning team",
        )
    ]
    parts.extend(board_cell(cell) for cell in row.cells)
    parts.append("</tr>")
    return "".join(parts)


@register.simple_tag
def options(values, selected):
    """<option>s of a filter, the selected one marked."""
    return mark_safe(
        "".join(
            _html('<option value="{}"{}>{}</option>', value, SafeString(" selected" * (value == selected)), value)
            for value in values
        )
    )


@lru_cache(maxsize=64)
def _cell_start(environment_name):
    # The same four openings, 200 times each on a full board.
    return _html('<td class="cell" data-environment="{}">', environment_name)


def board_cell(cell):
    """The <td> of one cell, its values escaped: marked safe once per row set, not once per cell."""
    parts = [_cell_start(cell.environment.name)]
    if cell.version:
        parts.append(
            _html(
                '<div class="cell-top"><a class="version" href="{}">{}</a> '
                '<span class="muted small">deployed <time datetime="{}" title="{}">{}</time></span> {}</div>',
                cell.release_url,
                cell.version,
                cell.deployed_iso,
                cell.deployed_exact,
                cell.age,
                SafeString(_badge(cell.health)),
            )
        )
        parts.append('<div class="verification">')
        parts.append(_badge(cell.verification))
        if cell.failure_reason:
            # Why it failed, readable without hovering (the badge's title has it whole).
            parts.append(_html('<div class="small reason">{}</div>', _shorten(cell.failure_reason)))
        if cell.soak_percent is not None:
            parts.append(
                _html(
                    '<progress max="100" value="{}" aria-label="Soak {} % done"></progress>',
                    cell.soak_percent,
                    cell.soak_percent,
                )
            )
        parts.append("</div>")
        if cell.drift:
            parts.append(
                _html('<div class="drift {}" title="{}">{}</div>', cell.drift.tone, cell.drift.title, cell.drift.label)
            )
        if cell.far_behind and not cell.far_behind_in_drift:
            parts.append(
                _html(
                    '<div class="badge warn far-behind" title="{}">{}</div>',
                    cell.far_behind.title,
                    cell.far_behind.label,
                )
            )
        if cell.gitops_file and cell.gitops_file_url:
            # The portal's own commit, of a promotion that did not finish: its page says what happened.
            parts.append(
                _html(
                    '<div><a class="badge {}" href="{}" title="{}">{}</a></div>',
                    cell.gitops_file.tone,
                    cell.gitops_file_url,
                    cell.gitops_file.title,
                    cell.gitops_file.label,
                )
            )
        elif cell.gitops_file:
            parts.append(
                _html(
                    '<div class="badge {}" title="{}">{}</div>',
                    cell.gitops_file.tone,
                    cell.gitops_file.title,
                    cell.gitops_file.label,
                )
            )
    else:
        parts.append('<div class="muted">not deployed</div>')
    if cell.hold_reason:
        parts.append(_html('<div class="small warn-text">automatic promotions on hold: {}</div>', cell.hold_reason))
    if cell.waiting:
        parts.append(
            _html(
                '<div class="waiting"><a href="{}">{}</a> <span class="badge info"{}>{}</span>{}{}</div>',
                cell.waiting_url,
                cell.waiting.release.version,
                SafeString(_html(' title="{}"', cell.waiting_title) if cell.waiting_title else ""),
                cell.waiting_label,
                SafeString(' <span class="badge emergency">break-glass</span>' if cell.waiting.is_emergency else ""),
                SafeString(
                    _html(
                        ' <a class="small" href="{}" rel="noopener">PR #{} ({})</a>',
                        cell.waiting.pr_url,
                        cell.waiting.pr_number,
                        cell.waiting.get_pr_state_display().lower(),
                    )
                    if cell.waiting.pr_url
                    else ""
                ),
            )
        )
    if cell.overdue:
        parts.append(
            _html('<div class="badge warn overdue" title="{}">{}</div>', cell.overdue.title, cell.overdue.label)
        )
    if not cell.waiting and cell.stopped:
        parts.append(
            _html(
                '<div class="stopped small"><a href="{}">{}</a> {}</div>',
                cell.stopped_url,
                cell.stopped.release.version,
                cell.stopped_label,
            )
        )
    allowed = [action for action in cell.actions if action.allowed]
    unavailable = [action for action in cell.actions if not action.allowed]
    if allowed:
        parts.append('<div class="actions">')
        parts.extend(_action(action) for action in allowed)
        parts.append("</div>")
    if unavailable:
        parts.append(_unavailable(cell, unavailable))
    parts.append("</td>")
    return "".join(parts)
