"""SDG work units: the per-leaf journal, fixed groups of units through the teacher, and their split over ranks.

A stage is a list of units with deterministic ids. They go to the teacher in fixed groups (the same batches on
every run, so a resumed run repeats its text exactly); finished units are appended to the leaf's journal. Under
`mlx.launch` rank r runs groups r, r + size, ... with its own teacher and journal, and after each stage every rank
gets every result through the distributed group (`Run._swap`), so all ranks continue with the same items and
the data equal one process's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from mlxlab.config import GenerateConfig
from mlxlab.errors import MlxlabError

JOURNAL_VERSION = 1


class Journal:
    """Append-only record of finished work units of one leaf; a torn last line is ignored."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        self.records: dict[str, dict] = {}
        self.restarted = False              # True when an older journal with other settings was set aside
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        header = _loads(lines[0]) if lines else None
        if header is not None and header.get("fingerprint") == fingerprint:
            for line in lines[1:]:
                record = _loads(line)
                if record and "unit" in record:
                    self.records[record["unit"]] = record
        else:
            if lines:   # settings changed: the old work does not apply; keep it aside, start afresh
                os.replace(path, path.with_suffix(".jsonl.stale"))
                self.restarted = True
            self._write([{"journal": JOURNAL_VERSION, "fingerprint": fingerprint}])

    def _write(self, records: list[dict]) -> None:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def add(self, records: list[dict]) -> None:
        """Append `records` (one group) durably."""
        self._write(records)
        for record in records:
            self.records[record["unit"]] = record


def _loads(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None



def journal_path(out: Path, leaf: str, rank: int = 0) -> Path:
    """Rank `rank`'s journal of `leaf` under the output folder `out` (rank 0's also holds what the others sent)."""
    return out / ".journal" / f"{leaf_key(leaf)}{f'.rank{rank}' if rank else ''}.jsonl"


def rank_journals(out: Path, rank: int) -> list[Path]:
    """The journals that rank `rank` (> 0) keeps under `out`, with those it set aside as stale."""
    return sorted((out / ".journal").glob(f"*.rank{rank}.jsonl*"))


def leaf_key(name: str) -> str:
    """A file name for a leaf (its taxonomy path with / → __)."""
    return re.sub(r"[^\w.-]+", "_", name.replace("/", "__"))


# ---------------------------------------------------------------------------------------------- runner

class Run:
    """One leaf's run: the teacher, the journal, the settings, the stats and the progress display."""

    def __init__(self, teacher, cfg: GenerateConfig, leaf, journal: Journal, stats, display,
                 share: dict | None = None):
        self.teacher, self.cfg, self.leaf, self.journal, self.stats, self.display = (
            teacher, cfg, leaf, journal, stats, display)
        self.share = share if share is not None else {"units": 0, "tokens": 0}   # what this rank generated
        self.passages: list[dict] = []      # a back-translated knowledge leaf's passages (`chunking.passages`)
        from mlxlab.distributed import world

        self.world = world()
        in_process = teacher.backend in ("mlx", "llama-cpp")
        servers = len(getattr(teacher, "urls", None) or ()) or 1   # a fleet: `concurrency` in flight per server
        self.group = max(1, teacher.batch_size if in_process else teacher.concurrency * 2 * servers)

    def generate(self, stage: str, units: list[tuple[str, list[dict] | str]], *,
                 verdict: tuple[str, tuple[str, ...]] | None = None,
                 stop: tuple[str, ...] | None = None) -> dict[str, str]:
        """Texts for `units` ((id, messages)), from the journal where done, else from the teacher.

        `verdict` = (tag, choices) marks a judge stage: with judge_mode choose/auto on a teacher that can,
        the verdict is the likeliest choice after "[Start of <tag>]" instead of written text. With `stop`,
        each unit is a raw text that the teacher continues up to the first stop string (few-shot style).
        """
        cfg = self.cfg
        judge = verdict is not None
        choose = judge and cfg.judge_mode in ("auto", "choose") and self.teacher.backend == "mlx"
        if judge and cfg.judge_mode == "choose" and not choose:
            raise MlxlabError(f"judge_mode 'choose' needs the mlx teacher backend, not {self.teacher.backend}",
                              hint="use --judge-mode generate (or auto)")
        task = self.display.start(f"{self.leaf.name} · {stage}", len(units))
        # fixed groups: a resumed run redoes a whole group, with the same batch, so results repeat exactly; under
        # mlx.launch rank r runs groups r, r + size, ... (the same batches as one process) and all ranks swap results
        groups = [units[lo:lo + self.group] for lo in range(0, len(units), self.group)]
        mine = groups[self.world.rank::self.world.size]
        for group in mine:
            if all(uid in self.journal.records for uid, _ in group):
                self.display.restored(task, len(group))
                continue
            start = time.perf_counter()
            advance = lambda done, toks: self.display.advance(task, done, toks)  # noqa: E731
            out = self._ask(group, judge, verdict if choose else None, stop, advance)
            self._record(group, out, (time.perf_counter() - start) / len(group))
        if self.world.size > 1:
            self._swap(stage, [self.journal.records[uid] for group in mine for uid, _ in group])
            self.display.restored(task, len(units) - sum(map(len, mine)))
        self.display.finish(task)
        records = [self.journal.records[uid] for uid, _ in units]
        self.stats.tokens += sum(r["tokens"] for r in records)
        self.stats.seconds += sum(r.get("seconds", 0.0) for r in records)
        return {uid: r["text"] for (uid, _), r in zip(units, records)}

    def _ask(self, group: list[tuple[str, list[dict] | str]], judge: bool, choose: tuple[str, tuple[str, ...]] | None,
             stop: tuple[str, ...] | None, progress) -> list[tuple[str, int, str]]:
        """(text, tokens, finish) of each unit of one group, from the teacher: the likeliest of `choose`'s choices
        where the teacher can tell, else a continuation up to `stop` (raw texts), else a chat reply."""
        cfg = self.cfg
        temperature = cfg.judge_temperature if judge else cfg.temperature
        max_tokens = cfg.judge_max_tokens if judge else cfg.max_tokens
        messages = [m for _, m in group]
        if choose is not None:
            tag, choices = choose
            picked = self.teacher.choose(messages, list(choices), prefix=f"[Start of {tag}]\n", progress=progress)
            if picked is not None:
                return [(f"[Start of {tag}]\n{p}\n[End of {tag}]" if p else "", 1, "choice") for p in picked]
        seeds = [unit_seed(cfg.seed, self.leaf.name, uid) for uid, _ in group]
        if stop is not None:
            done = self.teacher.complete(messages, stop=stop, temperature=temperature, top_p=cfg.top_p,
                                         max_tokens=max_tokens, seeds=seeds, progress=progress)
            return [(c.text, c.tokens, c.finish_reason) for c in done]
        replies = self.teacher.generate(messages, n=1, temperature=temperature, top_p=cfg.top_p,
                                        max_tokens=max_tokens, seeds=seeds, progress=progress)
        return [(c[0].text, c[0].tokens, c[0].finish_reason) for c in replies]

    def _record(self, group: list[tuple[str, object]], out: list[tuple[str, int, str]], seconds: float) -> None:
        """Journal one group's results (`seconds` each) and count them as this rank's share."""
        self.journal.add([{"unit": uid, "text": text, "tokens": tokens, "finish": finish,
                           "seconds": round(seconds, 4)} for (uid, _), (text, tokens, finish) in zip(group, out)])
        self.share["units"] += len(group)
        self.share["tokens"] += sum(tokens for _text, tokens, _finish in out)

    def _swap(self, stage: str, records: list[dict]) -> None:
        """Every rank's records of this stage to every rank; rank 0 journals them all (the others only their own)."""
        from mlxlab.distributed import gather_json

        gathered = gather_json(records, f"gathering {self.leaf.name} · {stage}", self.world)
        new = [r for part in gathered for r in part if r["unit"] not in self.journal.records]
        if self.world.main and new:
            self.journal.add(new)
        self.journal.records.update((r["unit"], r) for r in new)

    def stage(self, name: str, items: dict[str, dict], render: Callable[[dict], list[dict] | str],
              parse: Callable[[str, dict], tuple[dict | None, bool]], *,
              verdict: tuple[str, tuple[str, ...]] | None = None,
              stop: tuple[str, ...] | None = None) -> dict[str, dict]:
        """Run one role over `items`; keep what parses and passes; record the counts."""
        texts = self.generate(name, [(f"{name}/{key}", render(item)) for key, item in items.items()],
                              verdict=verdict, stop=stop)
        passed, unparsed = {}, 0
        for key, item in items.items():
            try:
                fields, ok = parse(texts[f"{name}/{key}"], item)
            except Exception:           # a parser bug must not lose a run: count it as unparsed
                fields, ok = None, False
            if fields is None:
                unparsed += 1
            elif ok:
                passed[key] = {**item, **fields}
                if verdict is None:     # the gates' truncation check reads how the text's generation ended
                    passed[key]["finish"] = self.journal.records[f"{name}/{key}"].get("finish", "stop")
        self.stats.stages.append({"stage": name, "sent": len(items), "parsed": len(items) - unparsed,
                                  "unparsed": unparsed, "passed": len(passed)})
        return passed


def unit_seed(seed: int, leaf: str, uid: str) -> int:
    digest = hashlib.sha256(f"{seed}\0{leaf}\0{uid}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def knowledge_examples(seeds: list[dict]) -> list[dict]:
    """Visible knowledge seed items grouped back into examples: [{context, qas: [{question, answer}]}]."""
    grouped: dict[int, dict] = {}
    for item in seeds:
        grouped.setdefault(item["example"], {"context": item.get("context", ""), "qas": []})["qas"].append(item)
    return list(grouped.values())


def knowledge_units(examples: list[dict], chunks: list, n: int) -> dict[str, dict]:
    """`n` attempts per seed Q&A, each example in turn, spread evenly over the chunks so every part of the
    documents gets questions."""
    total = n * sum(len(e["qas"]) for e in examples)
    return {f"{u}": {"seed": u % len(examples), "chunk": chunks[u * len(chunks) // total].text,
                     "chunk_index": chunks[u * len(chunks) // total].index} for u in range(total)}
