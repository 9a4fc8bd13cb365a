"""Phased training's files: a phases file read with file:line errors, and the phases' results combined into
one training (result.json, train_log.jsonl, loss.png) whose iterations run on across the phases."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from mlxlab.config import TrainConfig
from mlxlab.errors import MlxlabError
from mlxlab.files import atomic_write
from mlxlab.train.checkpoints import checkpoints


def combine_phases(output: Path, count: int) -> dict:
    """The result of phases 1..`count` under `output` as one training: writes `output/{result.json,
    train_log.jsonl, loss.png}` and returns the result as JSON.

    Iterations run on across phases (phase 2's iteration 1 follows phase 1's last), and every log row says its
    phase. `best_iter` is the iteration of the adapters in `output`: a phase that kept its iteration 0 kept the
    adapters it started from, those of the phase before.
    """
    from mlxlab.train.train_log import plot_loss, read_log

    output = Path(output)
    phases = [json.loads((output / f"phase_{n}" / "result.json").read_text(encoding="utf-8"))
              for n in range(1, count + 1)]
    rows, found, offset, kept = [], {}, 0, 0
    for number, phase in enumerate(phases, start=1):
        folder = output / f"phase_{number}"
        rows += [{**row, "iter": row["iter"] + offset, "phase": number} for row in read_log(folder / "train_log.jsonl")]
        found.update({offset + i: str(path) for i, path in checkpoints(folder).items()})
        ran = phase.get("stopped_early") or phase["num_iters"]
        if phase.get("best_iter") != 0:
            kept = offset + (ran if phase.get("best_iter") is None else phase["best_iter"])
        offset += ran
    log = output / "train_log.jsonl"
    atomic_write(log, "".join(json.dumps(r) + "\n" for r in rows))
    plot = plot_loss(log, output / "loss.png", kept=kept)
    last = phases[-1]
    combined = {**last, "adapters": str(output), "checkpoints": found, "num_iters": offset,
                "num_epochs": sum(p["num_epochs"] for p in phases), "log": str(log),
                "loss_plot": str(plot) if plot else None, "best_iter": kept if last.get("best_iter") is not None
                else None, "stopped_early": offset if last.get("stopped_early") else None,
                "phases": [{k: v for k, v in p.items() if k != "phases"} for p in phases]}
    atomic_write(output / "result.json", json.dumps(combined, indent=2))
    return combined


def read_phases(path: str | Path) -> list[dict]:
    """Phases from a YAML list (`- data: DIR` plus any train settings per item), checked with file:line."""
    import typing

    import yaml

    from mlxlab.config import coerce, compose_yaml

    path = Path(path)
    text, root = compose_yaml(path, "phases file")
    example = 'e.g.\n  - {data: data/phase1, num_epochs: 1}\n  - {data: data, learning_rate: 5e-5}'
    if not isinstance(root, yaml.SequenceNode) or not root.value:
        raise MlxlabError("a phases file is a non-empty YAML list of phases", path=path, line=1, hint=example)
    hints = typing.get_type_hints(TrainConfig)
    names = ["data", *hints]
    phases = []
    for item in root.value:
        where = dict(path=path, line=item.start_mark.line + 1, column=item.start_mark.column + 1)
        if not isinstance(item, yaml.MappingNode):
            raise MlxlabError("each phase is a mapping with `data` and train settings", **where, hint=example)
        phase = {}
        for key_node, value_node in item.value:
            key = key_node.value
            kwhere = dict(path=path, line=key_node.start_mark.line + 1, column=key_node.start_mark.column + 1)
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                raise MlxlabError(f"unknown key '{key}' in a phase" + (f" (did you mean '{close[0]}'?)" if close
                                                                        else ""), **kwhere)
            value = yaml.SafeLoader(text).construct_object(value_node, deep=True)
            try:
                phase[key] = str(value) if key == "data" else coerce(value, hints[key], key)
            except ValueError as exc:
                raise MlxlabError(str(exc), path=path, line=value_node.start_mark.line + 1,
                                  column=value_node.start_mark.column + 1) from None
        if "data" not in phase:
            raise MlxlabError("this phase has no `data`", **where, hint=example)
        phases.append(phase)
    return phases
