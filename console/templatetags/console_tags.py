from datetime import timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince

register = template.Library()


@register.simple_tag
def timestamp(value):
    """A ``<time>`` saying how long ago ``value`` was, with the exact time on hover."""
    if value is None:
        return mark_safe('<span class="muted">never</span>')
    ago = "just now" if timezone.now() - value < timedelta(minutes=1) else f"{timesince(value, depth=1)} ago"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z"),
        ago,
    )
