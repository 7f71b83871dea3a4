"""Markdown written by CI and people (changelogs) as HTML a page may show.

markdown-it-py parses CommonMark with raw HTML off; nh3 (the Rust ammonia sanitiser) then keeps
only the tags below, links to http(s) and mailto with rel="noopener noreferrer nofollow", so
whatever a changelog holds it cannot run script, load an image or restyle the page. Headings
become bold paragraphs, so a changelog's "# 2026.02.1" never competes with the page's own.
"""

import nh3
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "a",
    "blockquote",
    "br",
    "code",
    "del",
    "em",
    "hr",
    "li",
    "ol",
    "p",
    "pre",
    "strong",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = {"http", "https", "mailto"}


def _parser() -> MarkdownIt:
    parser = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])
    parser.disable("image")
    parser.add_render_rule("heading_open", lambda *args: "<p><strong>")
    parser.add_render_rule("heading_close", lambda *args: "</strong></p>\n")
    return parser


_PARSER = _parser()


def render(text: str) -> str:
    """Safe HTML for `text` (still to be marked safe by the caller's template filter)."""
    if not text.strip():
        return ""
    return nh3.clean(
        _PARSER.render(text),
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )
