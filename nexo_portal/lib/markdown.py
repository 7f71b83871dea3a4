"""Markdown written by CI and people (changelogs) as HTML a page may show.

markdown-it-py parses CommonMark with raw HTML off; nh3 (the Rust ammonia sanitiser) then keeps
only the tags below, links to http(s) and mailto with rel="noopener noreferrer nofollow", so
whatever a changelog holds it cannot run script, load an image or restyle the page. Headings
become bold paragraphs, so a changelog's "# 2026.02.1" never competes with the page's own. A
single newline is a line break (as on GitHub's comments): CI writes changelogs a change a line,
"feat: …" then "fix: …", which CommonMark would run together into one line.
"""

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

# A longer text shows this many lines, the rest folded behind a <details> (render_folded) ...
FOLD_AFTER_LINES = 12
# ... unless so few would be folded that showing them costs less than the click.
FOLD_AT_LEAST_LINES = 5

ALLOWED_TAGS = {
    "a",
    "blockquote",
    "br",
    "code",
    "em",
    "hr",
    "li",
    "ol",
    "p",
    "pre",
    "s",  # markdown-it's ~~strikethrough~~: without it the struck text would read as live
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
    parser = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(
        ["table", "strikethrough"]
    )
    parser.disable("image")
    parser.add_render_rule("heading_open", lambda *args: "<p><strong>")
    parser.add_render_rule("heading_close", lambda *args: "</strong></p>\n")
    return parser


_PARSER = _parser()


def _clean(html: str) -> str:
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )


def render(text: str) -> str:
    """Safe HTML for `text` (still to be marked safe by the caller's template filter)."""
    if not text.strip():
        return ""
    return _clean(_PARSER.render(text))


def _cut(tokens: list[Token], after: int) -> int | None:
    """The first line from `after` on where the text may be cut in two and each part still reads
    as it did: where a top-level block or a top-level list's item starts, or any line of a top-level
    paragraph (with line breaks on, the lines of one are lines apart). None where there is none."""
    starts: set[int] = set()
    for token in tokens:
        if token.map is None or token.nesting < 0:
            continue
        if token.level == 0:
            starts.add(token.map[0])
            if token.type == "paragraph_open":
                starts.update(range(*token.map))
        elif token.level == 1 and token.type == "list_item_open":
            starts.add(token.map[0])
    return min((line for line in starts if line >= after), default=None)


def render_folded(text: str) -> str:
    """As `render`, but a long text shows its first FOLD_AFTER_LINES lines or so and folds the rest
    into a <details> whose summary counts them.

    The parts are cut between blocks, list items or lines (`_cut`): a numbered list goes on with its
    number (`<ol start>`), and links in the first part may use definitions at the end."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    env: dict = {}
    cut = _cut(_PARSER.parse(text, env), FOLD_AFTER_LINES)
    lines = text.split("\n")
    hidden = 0 if cut is None else sum(1 for line in lines[cut:] if line.strip())
    if cut is None or hidden < FOLD_AT_LEAST_LINES:
        return render(text)
    references = env.get("references", {})
    shown = _clean(_PARSER.render("\n".join(lines[:cut]), {"references": dict(references)}))
    folded = _clean(_PARSER.render("\n".join(lines[cut:]), {"references": dict(references)}))
    return f'{shown}<details class="fold"><summary>{hidden} more lines</summary>{folded}</details>'
