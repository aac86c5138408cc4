"""The status page at ``GET /``: one self-contained HTML document for people.

It is built from router/http/status/ (index.html, status.css, status.js: no CDN, no
library, so it works offline) and polls /v1/stats and /v1/ring from the browser. What it
shows is the SECTIONS list at the top of status.js.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

HTML = b"text/html; charset=utf-8"


@cache
def page() -> bytes:
    """index.html with the style sheet and the script written into it."""
    folder = resources.files("router") / "http" / "status"
    html = (folder / "index.html").read_text(encoding="utf-8")
    html = html.replace("/*STYLE*/", (folder / "status.css").read_text(encoding="utf-8"))
    html = html.replace("/*SCRIPT*/", (folder / "status.js").read_text(encoding="utf-8"))
    return html.encode("utf-8")
