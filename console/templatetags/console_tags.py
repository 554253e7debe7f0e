from datetime import timedelta

from django import template
from django.templatetags.static import static
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince, timeuntil

from console.errors import without_server_paths
from marketplace.models import DEFAULT_APP_ICON, AppIcon

register = template.Library()

_KNOWN_ICONS = frozenset(AppIcon.values)

register.filter("without_server_paths", without_server_paths)


@register.simple_tag
def app_icon(listing, size=""):
    """An app's icon: one of the vendored SVG files (the default for none or an unknown name)."""
    name = listing.icon if listing.icon in _KNOWN_ICONS else DEFAULT_APP_ICON
    pixels = 32 if size == "large" else 24
    return format_html(
        '<span class="app-icon {}" aria-hidden="true" data-icon="{}"><img src="{}" alt="" width="{}" height="{}"></span>',
        size,
        name,
        static(f"img/icons/{name}.svg"),
        pixels,
        pixels,
    )


@register.simple_tag
def timestamp(value):
    """A ``<time>`` saying how long ago ``value`` was, with the exact time on hover."""
    if value is None:
        return mark_safe('<span class="muted">never</span>')
    ago = "just now" if timezone.now() - value < timedelta(minutes=1) else f"{timesince(value, depth=1)} ago"
    return _time(value, ago)


@register.simple_tag
def due(value):
    """A ``<time>`` saying how soon ``value`` comes, with the exact time on hover."""
    seconds = (value - timezone.now()).total_seconds()
    if seconds <= 0:
        soon = "now"
    elif seconds < 60:
        soon = f"in {int(seconds)} s"
    else:
        soon = f"in {timeuntil(value, depth=1)}"
    return _time(value, soon)


def _time(value, text: str) -> str:
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z"),
        text,
    )


@register.filter
def percent(rate):
    """A share from 0 to 1 as a percentage: 0.0123 -> "1.2%"."""
    return f"{rate * 100:.1f}%"


@register.filter
def ms(value):
    """A latency in milliseconds, or a dash without one."""
    if value is None:
        return "—"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


@register.filter
def count(value):
    """A whole number with thousands separated: 100000 -> "100,000"."""
    return f"{value:,}"


@register.filter
def price(value):
    """A plan's price per 1,000 calls: "free", or "0.40 / 1k calls"."""
    return "free" if not value else f"{value:.2f} / 1k calls"


@register.filter
def money(value):
    """An amount with two decimals: Decimal("1.5") -> "1.50"."""
    return f"{value:,.2f}"
