"""Reading a served page the way a browser would, for tests."""
from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

# Attributes through which a page makes the browser fetch (or link to) another document or asset.
URL_ATTRIBUTES = {"src", "href", "srcset", "action", "poster", "data"}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value:
                if name == "srcset":
                    self.urls.extend(part.split()[0] for part in value.split(",") if part.strip())
                else:
                    self.urls.append(value.strip())


def linked_urls(html: str) -> list[str]:
    """Every URL in the page's src/href/srcset/action/poster/data attributes, as written."""
    parser = _Links()
    parser.feed(html)
    parser.close()
    return parser.urls


def foreign_urls(html: str, *, own_host: str = "testserver") -> list[str]:
    """The page's linked URLs that point to another host (a CDN, say): absolute or protocol-relative URLs
    whose host is not ``own_host``. Paths, fragments and ``data:`` URLs stay on the page's own host."""
    foreign = []
    for url in linked_urls(html):
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "javascript", "mailto"):
            continue
        if parts.netloc and parts.hostname != own_host:
            foreign.append(url)
    return foreign
