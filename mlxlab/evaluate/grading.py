"""Manual grades by several graders: the grades file, each grader's blind order, a per-grader lock, agreement.

`grades.jsonl` is append-only: one line per grade, `{"id", "grade", "grader", "time"}`, fsynced as it is given,
so the terminal grader and the grading page write the same file and either continues the other's work. Lines
from before graders had names count as grader "default". The last grade of a grader for an answer wins.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import threading
import time
from pathlib import Path

from mlxlab.errors import MlxlabError

DEFAULT_GRADER = "default"
GRADES = range(6)
_APPEND = threading.Lock()         # graders on one page server append from several threads


def grader_name(name: str | None) -> str:
    """`name` stripped, or an error saying what a grader's name may be."""
    text = (name or "").strip()
    if not text:
        raise MlxlabError("a grader needs a name", hint="type your name (e.g. --grader alice)")
    if len(text) > 64 or any(ord(c) < 32 for c in text):
        raise MlxlabError(f"grader name {text[:20]!r}... is too long or has control characters",
                          hint="use a short name such as 'alice'")
    return text


def read_grades(path: Path) -> dict[str, dict[str, int]]:
    """Grades by grader, then by answer id (the last grade wins; a torn or foreign line is skipped)."""
    grades: dict[str, dict[str, int]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                value = int(record["grade"])
                if value in GRADES:
                    grades.setdefault(str(record.get("grader") or DEFAULT_GRADER), {})[str(record["id"])] = value
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                continue
    return grades


def append_grade(path: Path, answer: str, value: int, grader: str) -> None:
    """Append one grade to `path` and fsync it: one write of one line, so concurrent graders never interleave."""
    line = json.dumps({"id": answer, "grade": value, "grader": grader, "time": time.time()}) + "\n"
    with _APPEND:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def blind_order(rows: list[dict], grader: str, seed: int = 0) -> list[dict]:
    """The answers in `grader`'s own shuffled order (the same on every session, different between graders)."""
    order = sorted(rows, key=lambda r: r["id"])
    random.Random(f"{grader}\0{seed}").shuffle(order)
    return order


def prompt_texts(output: Path) -> dict[str, tuple[str, str | None]]:
    """Prompt id -> (the user's question, the reference answer or None), from the prompts.json `evaluate` wrote."""
    try:
        saved = json.loads((output / "prompts.json").read_text(encoding="utf-8"))
        return {pid: ("\n\n".join(m["content"] for m in p["messages"] if m["role"] == "user"), p.get("reference"))
                for pid, p in saved.items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return {}


class GraderLock:
    """One grading session per grader and folder: a second terminal or page with the same name is refused."""

    def __init__(self, output: Path, grader: str):
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", grader)[:40]
        self.path = output / f".grading-{slug}.lock"
        self.grader, self._file = grader, None

    def acquire(self) -> GraderLock:
        import fcntl

        handle = self.path.open("a+")
        try:   # flock: released by the OS when the holder dies, so a crash leaves no stale lock
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise MlxlabError(f"grader '{self.grader}' is already grading this folder (another terminal or page)",
                              path=self.path.parent, hint="finish that session first, or grade under another name")
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()      # closing drops the flock
            self._file = None

    def __enter__(self) -> GraderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def agreement(grades: dict[str, dict[str, int]], answers: list[str] | None = None) -> dict:
    """Krippendorff's alpha (ordinal, 0-5) between graders over `answers` (default: every graded answer).

    Ordinal because a 4 is closer to a 5 than to a 1 but the steps need not be equal. Undefined (None, with the
    reason) for fewer than two graders, no answer graded twice, or no variation at all.
    """
    graders = sorted(grades)
    units = answers if answers is not None else sorted({a for g in grades.values() for a in g})
    shared = [a for a in units if sum(a in grades[g] for g in graders) >= 2]
    found = {"alpha": None, "level": "ordinal", "graders": len(graders), "answers": len(shared), "reason": None}
    if len(graders) < 2:
        return {**found, "reason": f"needs two graders, found {len(graders)}"}
    if not shared:
        return {**found, "reason": "no answer was graded by two graders"}
    import krippendorff
    import numpy as np

    data = np.array([[grades[g].get(a, np.nan) for a in shared] for g in graders], dtype=float)
    try:
        with np.errstate(invalid="ignore", divide="ignore"):    # no variation: 0/0, reported below as undefined
            value = float(krippendorff.alpha(reliability_data=data, value_domain=list(GRADES),
                                             level_of_measurement="ordinal"))
    except (ValueError, ZeroDivisionError) as err:
        return {**found, "reason": f"undefined: {err}"}
    if not math.isfinite(value):
        return {**found, "reason": "undefined: every grade is the same, so there is no disagreement to expect"}
    return {**found, "alpha": value}
