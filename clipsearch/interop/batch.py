"""`clipsearch batch`: a CSV of queries in, the top k photos of each out (CSV or JSON lines).

The input has `image_path` and `description` columns (any others are passed through). A row
with a description is a text query in the query language; a row without one whose
image_path names an image is an image query (place recognition: where was this taken?).
The output CSV has, in this order: query_image_path, utm_east, utm_north, then
reference_N_path, reference_N_distance, reference_N_utm_east, reference_N_utm_north for
N = 1..k, then description and the passed-through columns. Distance is 1 - cosine
similarity, rounded to 4 places. UTM coordinates come from place-recognition file names
(`@0543256.96@4178906.70@image001.jpg`); anything else, a missing reference and a failed
query give `nan` (a missing reference's path is empty). Nothing is written unless it is
written whole.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .._files import replaced
from ..errors import BadArgument, ClipsearchError
from ..paths import absolute
from ..records import BatchAnswer, BatchQuery

# What answers a batch: Library.search_many (queries, k, min_score) -> one answer each.
SearchMany = Callable[[Sequence[BatchQuery], int, "float | None"], list[BatchAnswer]]

REQUIRED = ("image_path", "description")
FORMATS = ("csv", "jsonl")
BATCH = 256  # queries per model call and per pass over the catalog
NAN = float("nan")
# @east@north@...: numbers with an optional sign and decimals (no exponents, no nan or inf).
_UTM = re.compile(r"@([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)@([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)@")


def utm_of(path: str | None) -> tuple[float, float]:
    """(east, north) from a file name of the form `@<east>@<north>@...`, else (nan, nan).
    Only the file name counts (not its folders); `@543256.96@4178906.70@x.jpg` gives
    (543256.96, 4178906.7)."""
    if not path:
        return NAN, NAN
    name = re.split(r"[/\\]", path)[-1]
    match = _UTM.match(name)
    if not match:
        return NAN, NAN
    return float(match.group(1)), float(match.group(2))


@dataclass
class QueryRow:
    """A row of the input: the query it asks and the columns it passes through."""

    line: int  # where it starts in the file (1: the header)
    image_path: str
    description: str
    extra: dict[str, str]


@dataclass
class BatchSummary:
    queries: int = 0
    failed: int = 0
    output: Path | None = None
    failures: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), at most a few kept


def read_queries(path: str | os.PathLike) -> tuple[list[str], list[QueryRow]]:
    """(the names of the passed-through columns, the rows) of a query CSV; a ClipsearchError
    naming the problem for a file that is missing, empty, not text, not CSV or without the
    required columns. A BOM (UTF-8 or UTF-16) is understood; quoted newlines are kept as
    spaces."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ClipsearchError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    text = _decode(raw, path)
    if not text.strip():
        raise ClipsearchError(f"{path} is empty: the first line must name the columns, e.g. image_path,description")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        names = [name.strip() for name in header]
        lowered = [name.lower() for name in names]
        missing = [name for name in REQUIRED if name not in lowered]
        if missing:
            raise ClipsearchError(
                f"{path} has no {' and no '.join(repr(m) for m in missing)} column (its first line names: "
                f"{', '.join(repr(n) for n in names[:8]) or 'nothing'}); the first line must name image_path "
                "and description")
        image_at, text_at = lowered.index("image_path"), lowered.index("description")
        extras = _passed_names([(i, n) for i, n in enumerate(names) if i not in (image_at, text_at)])
        rows: list[QueryRow] = []
        line = reader.line_num + 1
        for record in reader:
            if not any(cell.strip() for cell in record):
                line = reader.line_num + 1
                continue  # a blank line
            cells = record + [""] * (len(names) - len(record))
            rows.append(QueryRow(line, cells[image_at].strip(), " ".join(cells[text_at].split()),
                                 {n: cells[i] for i, n in extras}))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise ClipsearchError(f"{path}, line {reader.line_num}: not valid CSV ({exc})") from None
    return [n for _, n in extras], rows


# Names the output uses itself: an input column of one of them is passed through as input_NAME.
_OUTPUT_NAMES = ("query_image_path", "utm_east", "utm_north", "description", "references", "error")


def _passed_names(columns: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The passed-through columns with the names they get in the output: one that collides
    with an output column, or repeats an earlier name, is renamed (input_NAME, NAME_2)."""
    taken: set[str] = set(_OUTPUT_NAMES)
    named = []
    for index, name in columns:
        out = name or f"column_{index + 1}"
        if out.lower() in _OUTPUT_NAMES or out.lower().startswith("reference_"):
            out = f"input_{out}"
        number, base = 2, out
        while out.lower() in taken:
            out, number = f"{base}_{number}", number + 1
        taken.add(out.lower())
        named.append((index, out))
    return named


def _decode(raw: bytes, path: Path) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise ClipsearchError(f"{path}: starts like UTF-16 text but is not") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ClipsearchError(f"{path}, line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                              "save the file as UTF-8 (CSV UTF-8 in a spreadsheet)") from None


def header(k: int, extras: Sequence[str]) -> list[str]:
    """The output CSV's columns for k references."""
    columns = ["query_image_path", "utm_east", "utm_north"]
    for n in range(1, k + 1):
        columns += [f"reference_{n}_path", f"reference_{n}_distance", f"reference_{n}_utm_east",
                    f"reference_{n}_utm_north"]
    return columns + ["description", *extras]


def distance(score: float) -> float:
    """1 - cosine similarity, rounded to 4 places (never below 0: identical vectors can score
    a hair above 1)."""
    return round(max(0.0, 1.0 - float(score)), 4)


def run(search_many: SearchMany, source: str | os.PathLike, output: str | os.PathLike, *, k: int = 5,
        fmt: str | None = None, min_score: float | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        on_failure: Callable[[int, str], None] | None = None) -> BatchSummary:
    """Answer every query of the CSV at `source` and write them to `output` (format from
    `fmt`, else from its suffix: .jsonl/.json are JSON lines, anything else CSV). Relative
    image paths are taken from the CSV's folder. `on_progress(done, total)` after each batch,
    `on_failure(line, reason)` for each query that failed (its row is still written)."""
    output = Path(output)
    fmt = fmt or ("jsonl" if output.suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv")
    if fmt not in FORMATS:
        raise BadArgument("format", fmt, f"is not one of: {', '.join(FORMATS)}")
    if k < 1:
        raise BadArgument("k", k, "must be at least 1")
    if not output.parent.is_dir():
        raise ClipsearchError(f"{output.parent}: no such folder for the output")
    extras, rows = read_queries(source)
    if not rows:
        raise ClipsearchError(f"{source} has a header but no queries")
    base = Path(absolute(source)).parent
    summary = BatchSummary(queries=len(rows), output=output)
    columns = header(k, extras)
    newline = "" if fmt == "csv" else "\n"
    with replaced(output, "w", encoding="utf-8", newline=newline) as file:
        writer = csv.writer(file) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(columns)
        for start in range(0, len(rows), BATCH):
            chunk = rows[start:start + BATCH]
            answers = search_many([_query(row, base) for row in chunk], k, min_score)
            for row, answer in zip(chunk, answers):
                if answer.error is not None:
                    summary.failed += 1
                    if len(summary.failures) < 20:
                        summary.failures.append((row.line, answer.error))
                    if on_failure:
                        on_failure(row.line, answer.error)
                if writer is not None:
                    writer.writerow(_csv_row(row, answer, k, columns))
                else:
                    file.write(json.dumps(_json_row(row, answer), ensure_ascii=False) + "\n")
            if on_progress:
                on_progress(min(start + BATCH, len(rows)), len(rows))
    return summary


def _query(row: QueryRow, base: Path) -> BatchQuery:
    if row.description:
        return BatchQuery(text=row.description)
    if not row.image_path:
        return BatchQuery()
    return BatchQuery(image=os.path.normpath(base / os.path.expanduser(row.image_path)))


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(value)


def _csv_row(row: QueryRow, answer: BatchAnswer, k: int, columns: Sequence[str]) -> list[str]:
    east, north = utm_of(row.image_path)
    cells = [row.image_path, _number(east), _number(north)]
    for n in range(k):
        if n < len(answer.results):
            result = answer.results[n]
            ref_east, ref_north = utm_of(result.path)
            cells += [result.path, _number(distance(result.score) if result.score is not None else NAN),
                      _number(ref_east), _number(ref_north)]
        else:
            cells += ["", "nan", "nan", "nan"]
    passed = columns[len(cells):]
    return cells + [row.description if name == "description" else row.extra.get(name, "") for name in passed]


def _json_row(row: QueryRow, answer: BatchAnswer) -> dict:
    def number(value: float) -> float | None:
        return None if math.isnan(value) else value

    east, north = utm_of(row.image_path)
    references = []
    for result in answer.results:
        ref_east, ref_north = utm_of(result.path)
        references.append({"path": result.path,
                           "distance": distance(result.score) if result.score is not None else None,
                           "utm_east": number(ref_east), "utm_north": number(ref_north)})
    return {"query_image_path": row.image_path, "utm_east": number(east), "utm_north": number(north),
            "description": row.description, **row.extra, "references": references, "error": answer.error}
