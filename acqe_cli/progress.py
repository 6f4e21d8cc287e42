"""Progress on a terminal, as pip shows it: the library reports ``progress(label, done, total)``, this
module draws it. A rich bar per label on stderr when stderr is a terminal; nothing when piped or with
``-q`` / ``--json`` (the library never imports rich: it only calls the callback it was given).

    with progress_display(quiet) as show:         # show(label, done, total); total None: a spinner
        export_gguf(src, out, progress=lambda d, n: show("export", d, n))
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

__all__ = ["progress_display", "Show"]

Show = Callable[[str, int, "int | None"], None]


def _count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f}{unit}"
    return f"{n:,.0f}"


@contextlib.contextmanager
def progress_display(quiet: bool = False, stream=None) -> Iterator[Show]:
    """A ``show(label, done, total)`` callback that draws on a terminal and does nothing otherwise."""
    stream = stream if stream is not None else sys.stderr
    if quiet or not stream.isatty():
        yield lambda label, done, total=None: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    prog = Progress(SpinnerColumn(), TextColumn("{task.description:<26}"), BarColumn(),
                    TextColumn("{task.fields[count]:>20}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(file=stream), transient=False)
    tasks: dict[str, int] = {}

    def show(label: str, done: int, total: int | None = None) -> None:
        if label not in tasks:
            tasks[label] = prog.add_task(label, total=total, count="")
        count = f"{_count(done)}/{_count(total)}" if total else _count(done)
        prog.update(tasks[label], completed=done, total=total, count=count)

    with prog:
        yield show
