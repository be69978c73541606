"""A PR comment as GitHub renders it: GitHub's own cmark-gfm (tables, autolinks, raw HTML let
through, as GitHub does before its sanitizer), read back into what a reader sees.

GitHub turns `@name` and `@org/team` into notifications, and `#123`, URLs and commit ids into
links, in any text but code (and links), so text outside code is where data must never be.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

import cmarkgfm
from cmarkgfm.cmark import Options


@dataclass
class Cell:
    text: str = ""
    codes: list[str] = field(default_factory=list)  # each code span's text, in order


@dataclass
class Rendered:
    tags: list[str] = field(default_factory=list)  # every element, in order
    comments: list[str] = field(default_factory=list)  # HTML comments that survived
    outside_code: list[str] = field(default_factory=list)  # text a mention or link can be in
    codes: list[str] = field(default_factory=list)
    tables: list[list[list[Cell]]] = field(default_factory=list)  # table -> row -> cell

    def text_outside_code(self) -> str:
        return " ".join(self.outside_code)


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = Rendered()
        self.in_code = 0
        self.cell: Cell | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.out.tags.append(tag)
        if tag == "code":
            self.in_code += 1
            self.out.codes.append("")
            if self.cell is not None:
                self.cell.codes.append("")
        elif tag == "table":
            self.out.tables.append([])
        elif tag == "tr" and self.out.tables:
            self.out.tables[-1].append([])
        elif tag in ("td", "th") and self.out.tables:
            self.cell = Cell()
            self.out.tables[-1][-1].append(self.cell)

    def handle_endtag(self, tag: str) -> None:
        if tag == "code":
            self.in_code -= 1
        elif tag in ("td", "th"):
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.in_code:
            self.out.codes[-1] += data
            if self.cell is not None:
                self.cell.codes[-1] += data
        else:
            self.out.outside_code.append(data)
        if self.cell is not None:
            self.cell.text += data

    def handle_comment(self, data: str) -> None:
        self.out.comments.append(data)


def render(markdown: str) -> Rendered:
    html = cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.out
