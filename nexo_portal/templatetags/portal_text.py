"""Text written elsewhere, shown safely: `{{ release.changelog|markdown }}`."""

from django import template
from django.utils.safestring import mark_safe

from nexo_portal.lib import markdown as markdown_html

register = template.Library()


@register.filter
def markdown(text):
    """Markdown as sanitised HTML (nexo_portal.lib.markdown): safe to mark safe."""
    return mark_safe(markdown_html.render(text or ""))
