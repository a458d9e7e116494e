"""The interactive prompt (`clipsearch query`): type, look, refine, repeat.

A Session holds what one prompt knows between lines (the last query and its results, k,
the page) and answers each line through the Library, which keeps the text tower and the
forest warm. Reading lines is prompt_toolkit's job (history in the library folder,
completion of :commands and of folders after in:); a test or a script passes any
`read_line` function instead. What is shown is render.py's; nothing here imports rich.
"""

from __future__ import annotations

import difflib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import render
from .errors import BadArgument, ClipsearchError, NothingToSearch, NotIndexed
from .query import HELP as QUERY_HELP
from .query import Query

if TYPE_CHECKING:
    from .library import Library
    from .records import SearchResult

HISTORY_FILE = "query-history"
SHEETS = "sheets"  # contact sheets, in the library folder
KEEP_SHEETS = 20
MAX_K = 1000

COMMANDS = {
    ":more": "the next page of results",
    ":similar N": "photos like result N",
    ":open N": "open result N with the system viewer",
    ":show": "a contact sheet of these results (inline where the terminal can show images)",
    ":k N": "N results a page (now {k})",
    ":history": "the last queries",
    ":help": "this help",
    "exit": "leave (also quit, :q, Ctrl-D); Ctrl-C clears the line",
}
_EXITS = ("exit", "quit", ":q", ":quit", ":exit")


@dataclass
class _Last:
    """What :more, :similar, :open and :show act on."""

    query: Query
    like: int | None
    offset: int
    results: list[SearchResult] = field(default_factory=list)


class Session:
    """One prompt's state; `handle(line)` answers a line and returns False to leave."""

    def __init__(self, library: Library, console: Any, *, opener: Callable[[str], None] | None = None,
                 inline: Callable[[str, Any], bool] | None = None, history: Callable[[], list[str]] | None = None):
        from . import viewer

        self.library = library
        self.console = console
        self.k = 10
        self._open = opener or viewer.open_path
        self._inline = inline or viewer.show_inline
        self._typed: list[str] = []
        self._history = history or (lambda: list(self._typed))
        self._last: _Last | None = None
        self._warm: threading.Thread | None = None

    @property
    def results(self) -> list[SearchResult]:
        """The results shown last, which :more, :similar, :open and :show act on ([] before any)."""
        return list(self._last.results) if self._last is not None else []

    # --- start ------------------------------------------------------------------------------
    def banner(self) -> None:
        try:
            overview = self.library.overview()
        except ClipsearchError as exc:
            self.console.print(render.prompt_error(phrase(exc)))
            return
        self.console.print(render.prompt_banner(overview))
        if overview.photos:
            # The text tower and the forest load while the user types the first query.
            self._warm = threading.Thread(target=self._warm_up, name="clipsearch-warm", daemon=True)
            self._warm.start()

    def _warm_up(self) -> None:
        try:
            self.library.warm()
        except Exception:  # noqa: BLE001 - the first query says what is wrong, in its own words
            pass

    # --- lines ------------------------------------------------------------------------------
    def handle(self, line: str) -> bool:
        line = line.strip()
        if not line:
            return True
        self._typed.append(line)
        if line.lower() in _EXITS:
            return False
        if self._warm is not None:
            self._warm.join()  # one thread at a time uses the Library
            self._warm = None
        try:
            if line.startswith(":"):
                self._command(line)
            else:
                self._search(self.library.parse(line), None, 0)
        except ClipsearchError as exc:
            self.console.print(render.prompt_error(phrase(exc)))
        except KeyboardInterrupt:
            self.console.print(render.prompt_note("cancelled"))
        return True

    def _command(self, line: str) -> None:
        name, _, argument = line.partition(" ")
        name, argument = name.lower(), argument.strip()
        if name == ":help":
            self.console.print(render.prompt_help({c: d.format(k=self.k) for c, d in COMMANDS.items()}, QUERY_HELP))
        elif name == ":k":
            self.k = _number(argument, ":k", 1, MAX_K)
            self.console.print(render.prompt_note(f"{self.k} results a page"))
        elif name == ":more":
            last = self._need_results(":more")
            self._search(last.query, last.like, last.offset + len(last.results))
        elif name == ":similar":
            result = self._result(argument, ":similar")
            self._search(Query(filters=self._need_results(":similar").query.filters), result.file_id, 0)
        elif name == ":open":
            result = self._result(argument, ":open")
            self._open(result.path)
            self.console.print(render.prompt_note(f"opened {result.path}"))
        elif name == ":show":
            self._show()
        elif name == ":history":
            self.console.print(render.prompt_history(self._history()[-20:]))
        else:
            known = [c.split()[0] for c in COMMANDS if c.startswith(":")]
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]}?" if close else "; :help lists the commands"
            raise ClipsearchError(f"unknown command {name}{hint}")

    def _search(self, query: Query, like: int | None, offset: int) -> None:
        started = time.perf_counter()
        results = self.library.search(query, k=self.k, like=like, offset=offset)
        elapsed = time.perf_counter() - started
        for notice in self.library.take_notices():
            self.console.print(render.prompt_note(notice))
        self._last = _Last(query, like, offset, results)
        if not results:
            self.console.print(render.prompt_note("no more results" if offset else "no photos match"))
            return
        floor = self.library.judge(query, results, like=like, offset=offset)
        if floor is not None:
            self.console.print(render.prompt_note(render.nothing_close(results, floor)))
            return
        words = " ".join([*(t.text for t in query.terms if t.text), *query.filters.words])
        self.console.print(render.results_table(results, words))
        self.console.print(render.prompt_note(f"{len(results)} results in {elapsed * 1000:.0f} ms; "
                                              ":more for more, :show to see them"))

    def _need_results(self, command: str) -> _Last:
        if self._last is None:
            raise ClipsearchError(f"{command}: search for something first")
        return self._last

    def _result(self, argument: str, command: str) -> SearchResult:
        last = self._need_results(command)
        number = _number(argument, command, 1, None)
        for result in last.results:
            if result.rank == number:
                return result
        ranks = [r.rank for r in last.results]
        shown = f"{ranks[0]}-{ranks[-1]}" if ranks else "none"
        raise ClipsearchError(f"{command} {number}: there is no result {number} on this page (shown: {shown})")

    def _show(self) -> None:
        from .sheet import make_sheet

        last = self._need_results(":show")
        if not last.results:
            raise ClipsearchError(":show: no results to show")
        folder = self.library.settings.home / SHEETS
        path = folder / f"sheet-{time.strftime('%Y%m%d-%H%M%S')}-{last.offset + 1}.png"
        sheet = make_sheet(last.results, path, max_pixels=self.library.settings.max_pixels)
        _prune(folder)
        if not self._inline(sheet.path, self.console):
            self._open(sheet.path)
            self.console.print(render.prompt_note(f"contact sheet: {sheet.path}"))


def phrase(exc: ClipsearchError) -> str:
    """An error of the library in the prompt's words."""
    if isinstance(exc, BadArgument) and exc.name == "k":
        return f":k {exc.value}: {exc.rule}"
    if isinstance(exc, NotIndexed):
        return f"{exc}: run `clipsearch crawl FOLDER` first"
    if isinstance(exc, NothingToSearch):
        return "type what to look for: words, or the path of an image"
    return str(exc)


def _number(text: str, command: str, low: int, high: int | None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ClipsearchError(f"{command} needs a number, e.g. {command} 3") from None
    if value < low or (high is not None and value > high):
        raise ClipsearchError(f"{command} {value}: use {low} to {high}" if high else f"{command}: at least {low}")
    return value


def _prune(folder: Path) -> None:
    """Keep the newest KEEP_SHEETS contact sheets."""
    sheets = sorted(folder.glob("sheet-*.png"), key=lambda p: p.stat().st_mtime)
    for old in sheets[:-KEEP_SHEETS]:
        old.unlink(missing_ok=True)


def run(library: Library, console: Any, read_line: Callable[[], str] | None = None) -> None:
    """The prompt: read lines until exit, Ctrl-D or the end of input. Ctrl-C clears the line."""
    reader, history = (read_line, None) if read_line is not None else _terminal_reader(library)
    session = Session(library, console, history=history)
    session.banner()
    while True:
        try:
            line = reader()
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        if not session.handle(line):
            break


def _terminal_reader(library: Library) -> tuple[Callable[[], str], Callable[[], list[str]]]:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    home = library.settings.home
    history: FileHistory | InMemoryHistory
    try:
        home.mkdir(parents=True, exist_ok=True)
        (home / HISTORY_FILE).touch()
        history = FileHistory(str(home / HISTORY_FILE))
    except OSError:  # a read-only library: history for this prompt only
        history = InMemoryHistory()
    session: PromptSession[str] = PromptSession(history=history, completer=_Completer(),
                                                complete_while_typing=False)

    def read() -> str:
        return session.prompt("› ")

    def past() -> list[str]:
        return list(reversed(list(history.load_history_strings())))

    return read, past


def _Completer():  # noqa: N802 - builds the class on first use: prompt_toolkit loads only for the prompt
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document

    class QueryCompleter(Completer):
        """:commands at the start of a line; folders after in:."""

        def __init__(self) -> None:
            self._paths = PathCompleter(only_directories=True, expanduser=True)

        def get_completions(self, document, complete_event):
            word = document.get_word_before_cursor(WORD=True)
            if word.startswith(":") and document.text_before_cursor.strip() == word:
                for command in COMMANDS:
                    name = command.split()[0]
                    if name.startswith(word):
                        yield Completion(name, start_position=-len(word), display_meta=COMMANDS[command])
            elif word.lower().startswith("in:"):
                inner = Document(word[3:], len(word) - 3)
                yield from self._paths.get_completions(inner, complete_event)

    return QueryCompleter()
