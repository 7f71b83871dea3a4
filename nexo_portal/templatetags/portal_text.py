"""Text written elsewhere, shown safely: `{{ release.changelog|changelog }}`."""

from django import template
from django.utils.safestring import mark_safe

from nexo_portal.lib import markdown as markdown_html

register = template.Library()


@register.filter
def changelog(text):
    """A changelog's Markdown as sanitised HTML (nexo_portal.lib.markdown), safe to mark safe: a long
    one's first lines shown and the rest folded away."""
    return mark_safe(markdown_html.render_folded(text or ""))
