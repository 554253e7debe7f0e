"""Listing descriptions: Markdown written by publishers, shown to everyone in the console.

The text is untrusted. Raw HTML in it is not passed through but shown as text (Markdown's
HTML handling is switched off), and the HTML Markdown makes is then cleaned with an
allow-list: a few text tags, links to http(s) and mail addresses only, no attribute that
could run script or load anything (no ``on*``, ``style``, ``src``, no images).
"""

import markdown as markdown_lib
import nh3
from django.utils.safestring import SafeString, mark_safe

_EXTENSIONS = ["fenced_code", "tables", "sane_lists"]

_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "b", "i", "del",
    "code", "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip

_CLEANER = nh3.Cleaner(
    tags=_TAGS,
    clean_content_tags={"script", "style"},
    attributes={"a": {"href", "title"}, "ol": {"start"}},
    url_schemes={"http", "https", "mailto"},
    link_rel="nofollow noopener noreferrer",
    strip_comments=True,
)


def _markdown() -> markdown_lib.Markdown:
    md = markdown_lib.Markdown(extensions=_EXTENSIONS, output_format="html")
    # No raw HTML: a block or inline tag stays text, escaped like any other.
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    return md


def render_markdown(text: str) -> SafeString:
    """``text`` (Markdown) as HTML that is safe to put in a page as it is."""
    if not text:
        return mark_safe("")
    html = _markdown().convert(text)
    return mark_safe(_CLEANER.clean(html))  # cleaned by the allow-list above
