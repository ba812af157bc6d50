"""A review page (byorn.review) read back: its tags, the ids of the rows marked flagged, its text."""

from __future__ import annotations

from html.parser import HTMLParser


class Page(HTMLParser):
    """Every start tag with its attributes, the ids of the rows marked flagged, and the text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.flagged_ids: list[str] = []
        self.text: list[str] = []
        self._in_flag_cell = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        self._in_flag_cell = tag == "td" and attributes.get("class") == "flag"

    def handle_data(self, data):
        self.text.append(data)
        if self._in_flag_cell:
            self.flagged_ids.append(data)
            self._in_flag_cell = False
