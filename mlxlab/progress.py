"""Progress of long stages: a rich bar per stage with rate, tokens/s and ETA, or plain log lines when quiet."""

from __future__ import annotations

import sys
import time


class Display:
    """A rich progress bar per stage (rate, tokens/s, ETA), or one log line per stage when quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not sys.stderr.isatty()     # logs and pipes get plain lines, not redraws
        self.progress = None
        self.tasks: dict = {}
        if not quiet:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rates]}"), TimeElapsedColumn(),
                                     TextColumn("eta"), TimeRemainingColumn(), console=Console(stderr=True))

    def __enter__(self):
        if self.progress:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)

    def start(self, description: str, total: int):
        """A new stage line; returns its handle."""
        handle = self.progress.add_task(description, total=total, rates="") if self.progress else description
        self.tasks[handle] = {"start": time.perf_counter(), "done": 0, "tokens": 0, "total": total, "restored": 0}
        return handle

    def advance(self, handle, done: int, tokens: int) -> None:
        """Count finished samples and generated tokens."""
        state = self.tasks[handle]
        state["done"] += done
        state["tokens"] += tokens
        if self.progress:
            elapsed = max(1e-9, time.perf_counter() - state["start"])
            self.progress.update(handle, advance=done, rates=f"{state['done'] / elapsed:.2f} samples/s "
                                                             f"{state['tokens'] / elapsed:.1f} tok/s")

    def restored(self, handle, done: int) -> None:
        """Count samples taken from the journal (they do not enter the rates)."""
        self.tasks[handle]["restored"] += done
        if self.progress:
            self.progress.update(handle, advance=done, rates="from the journal")

    def finish(self, handle) -> None:
        """Close a stage line (quiet: print its summary)."""
        state = self.tasks.pop(handle)
        if self.quiet:
            elapsed = time.perf_counter() - state["start"]
            restored = f" ({state['restored']} from the journal)" if state["restored"] else ""
            sys.stderr.write(f"{handle}: {state['total']} units{restored}, {state['tokens']} new tokens in "
                             f"{elapsed:.1f} s ({state['tokens'] / max(elapsed, 1e-9):.1f} tok/s)\n")
