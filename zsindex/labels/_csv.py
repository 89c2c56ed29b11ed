"""CSV rows for the label, taxonomy and names formats, with errors a user can act on."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from zsindex.errors import InvalidInputError


def csv_rows(content: str, source: str) -> Iterator[tuple[int, list[str]]]:
    """``(line, cells)`` of each row (``line``: 1-based, where the row ends; a BOM is dropped).

    Raises:
        InvalidInputError: bad quoting, naming the line where the offending row starts.
    """
    # strict: at the end of the file an unclosed quote would otherwise swallow the rest of the
    # file into one cell, reported later as a label with a newline in it.
    reader = csv.reader(io.StringIO(content.removeprefix("\ufeff"), newline=""), strict=True)
    last = 0
    try:
        for row in reader:
            yield reader.line_num, row
            last = reader.line_num
    except csv.Error as exc:
        start = last + 1
        text = str(exc)
        if "unexpected end of data" in text:
            problem = (
                'a quoted cell starting on this line is never closed: add the closing " '
                '(write a quote inside a quoted cell as "")'
            )
        elif "expected after" in text:
            problem = (
                "text follows a closing quote: quote the whole cell and write a quote inside "
                'it as ""'
            )
        else:
            problem = f"bad CSV ({text})"
            start = max(start, reader.line_num)
        raise InvalidInputError(f"{source}, line {start}: {problem}") from None
