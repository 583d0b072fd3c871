"""Text from users' files made inert before the app shows it (no Streamlit here).

Model names, file names and anything else read from an uploaded config.json or report — and error
messages that quote them — are rendered by Streamlit as Markdown (st.markdown, st.success, st.info,
st.caption, ...) and by Plotly as a subset of HTML. `md` and `html_text` make such a string show
as exactly its characters.
"""
from __future__ import annotations

import html
import re

__all__ = ["md", "html_text", "count_text"]

#: every ASCII punctuation character: each one starts some Markdown construct (emphasis, links,
#: code, maths `$`, Streamlit's `:color[...]` and `:material/icon:` directives, HTML, tables)
_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")
#: where GFM autolinks start (`http://`, `www.`, `user@host`): a word joiner (U+2060, invisible)
#: after them stops the link, which Streamlit draws even from escaped text
_AUTOLINK = re.compile(r"(?i)(://|www(?=\.)|@)")


def md(text) -> str:
    """`text` as literal Markdown: one line, every punctuation character a numeric character
    reference (CommonMark §2.5), so no construct can start; Streamlit shows the same characters.

    >>> md("**x** [a](b)")
    '&#42;&#42;x&#42;&#42; &#91;a&#93;&#40;b&#41;'
    """
    flat = " ".join(str(text).split())          # a newline would end a paragraph, or a bold run
    return _PUNCTUATION.sub(lambda m: f"&#{ord(m.group())};", _AUTOLINK.sub(lambda m: m.group() + "\u2060", flat))


def html_text(text) -> str:
    """`text` for a Plotly title, label or hover text (which read <b>, <a href=...>, <br>)."""
    return html.escape(str(text), quote=True)


def count_text(n: int | None) -> str:
    """A parameter count as people write it: 6.74B, 124.44M, 50K.

    >>> count_text(6_738_415_616), count_text(124_439_808), count_text(50_000), count_text(12)
    ('6.74B', '124.44M', '50.00K', '12')
    """
    if n is None:
        return "?"
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
