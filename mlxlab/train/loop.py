"""Fine-tune a model with LoRA, DoRA, QLoRA or fully, on mlx-lm's tuner, with checkpoints that truly resume.

mlx-lm provides the adapter layers (`linear_to_lora_layers`), the masked loss, the schedules and the adapter
format; its training loop saves adapter weights only, so this module runs its own small loop whose checkpoints
also hold the optimizer state, the step and the data position. The RNG key of every step is a pure function of
(seed, step), so a run killed at any point and resumed from a checkpoint ends with the same adapters as a run
that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mlxlab.train.checkpoints import (checkpoints, flatten, restore_checkpoint, save_adapters, save_checkpoint,
                                      set_by_path)
from mlxlab.config import TrainConfig, resolve, save_resolved, to_dict
from mlxlab.errors import MlxlabError
from mlxlab.files import atomic_write
from mlxlab.train.adapters import adapter_config, attach_adapters, load_base
from mlxlab.train.phases import combine_phases
from mlxlab.train.train_log import read_log

DEFAULT_ITERS = 100
@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""
    adapters: Path                  # folder with adapters.safetensors + adapter_config.json
    checkpoints: dict[int, Path]    # iteration -> checkpoint folder
    final_loss: float
    val_loss: float | None
    tokens_per_second: float
    peak_memory_gb: float
    padding_fraction: float
    num_iters: int
    num_epochs: float
    truncated: int                  # training samples cut to max_seq_length
    dropped: int                    # of those, samples left out because no reply token was left
    log: Path
    loss_plot: Path | None
    best_iter: int | None = None            # the evaluated iteration whose adapters were kept (keep_best)
    best_reason: str | None = None          # why that one: its losses against the others and the base
    general_loss: float | None = None       # general_valid loss of the kept adapters
    general_base_loss: float | None = None  # general_valid loss of the base model (the forgetting reference)
    stopped_early: int | None = None        # iteration where patience ran out
    world_size: int = 1                     # processes that trained together (mlx.launch); 1 for one process
    rank_tokens: list[int] | None = None    # tokens each rank trained on, in rank order
    phases: list[dict] | None = None        # phased training: each phase's own result (its iterations from 1)

    def to_json(self) -> dict:
        """JSON-ready dict (paths as strings)."""
        out = dataclasses.asdict(self)
        out["checkpoints"] = {str(k): str(v) for k, v in self.checkpoints.items()}
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}

    @classmethod
    def from_json(cls, saved: dict) -> TrainResult:
        """The result `to_json` wrote (result.json)."""
        return cls(**{**saved, "adapters": Path(saved["adapters"]), "log": Path(saved["log"]),
                      "loss_plot": Path(saved["loss_plot"]) if saved["loss_plot"] else None,
                      "checkpoints": {int(k): Path(v) for k, v in saved["checkpoints"].items()}})


def make_optimizer(cfg: TrainConfig, num_iters: int):
    """Adam/AdamW with linear warmup and cosine decay (or a constant rate), via mlx-lm's schedule builder."""
    import mlx.optimizers as optim
    from mlx_lm.tuner.utils import build_schedule

    if cfg.lr_schedule == "cosine":
        lr = build_schedule({"name": "cosine_decay", "warmup": cfg.warmup_steps,
                             "arguments": [cfg.learning_rate, max(1, num_iters - cfg.warmup_steps), 0.0]})
    elif cfg.lr_schedule == "constant":
        lr = build_schedule({"name": "linear_schedule", "warmup": cfg.warmup_steps,
                             "arguments": [cfg.learning_rate, cfg.learning_rate, 1]})
    else:
        raise MlxlabError(f"unknown lr_schedule {cfg.lr_schedule!r}", hint="use cosine or constant")
    if cfg.optimizer not in ("adam", "adamw"):
        raise MlxlabError(f"unknown optimizer {cfg.optimizer!r}", hint="use adam or adamw")
    return (optim.AdamW if cfg.optimizer == "adamw" else optim.Adam)(learning_rate=lr)


def plan(num_batches: int, cfg: TrainConfig) -> tuple[int, float]:
    """(num_iters, num_epochs): the one given decides, the other is derived from the batches per epoch."""
    steps_per_epoch = num_batches / cfg.grad_accumulation
    if cfg.num_iters is not None and cfg.num_epochs is not None:
        raise MlxlabError("give num_iters or num_epochs, not both")
    if cfg.num_epochs is not None:
        if cfg.num_epochs <= 0:
            raise MlxlabError(f"num_epochs must be positive, found {cfg.num_epochs}")
        iters = max(1, math.ceil(cfg.num_epochs * steps_per_epoch))
    else:
        iters = cfg.num_iters if cfg.num_iters is not None else DEFAULT_ITERS
        if iters <= 0:
            raise MlxlabError(f"num_iters must be positive, found {iters}")
    return iters, iters / steps_per_epoch


def select_best(rows: list[dict], *, reference: float | None, tolerance: float) -> tuple[dict | None, str]:
    """The evaluation row to keep and why: lowest `val_loss` among rows whose `general_loss` is within
    `tolerance` of `reference` (the base model's); without a validation set, the lowest general loss.

    Choosing by in-domain validation alone buys a little knowledge with a lot of forgetting (measured on
    SmolLM2: the best in-domain checkpoint was 1% better there and 22% worse on general chat), so a
    checkpoint that forgot too much is never the best, however good its in-domain loss.
    """
    limit = reference * (1 + tolerance) if reference is not None else None
    eligible = [r for r in rows if limit is None or r.get("general_loss") is None or r["general_loss"] <= limit]
    key = "val_loss" if any(r.get("val_loss") is not None for r in rows) else "general_loss"
    scored = [r for r in eligible if r.get(key) is not None]
    if not scored:
        return None, "no evaluated checkpoint"
    best = min(scored, key=lambda r: (r[key], r["iter"]))

    def general(r):
        if r.get("general_loss") is None or not reference:
            return ""
        return f", general {r['general_loss']:.4f} ({r['general_loss'] / reference - 1:+.1%} vs base)"

    reason = f"iteration {best['iter']}: lowest {key} {best[key]:.4f}{general(best)}"
    rejected = [r for r in rows if r not in eligible and r.get(key) is not None and r[key] < best[key]]
    if rejected:
        worst = min(rejected, key=lambda r: r[key])
        reason += (f"; iteration {worst['iter']} had {key} {worst[key]:.4f} but forgot too much{general(worst)}, "
                   f"over the {tolerance:.0%} tolerance")
    return best, reason


def _progress(total: int, start: int, quiet: bool):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    console = Console(stderr=True)
    progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                        disable=quiet or not console.is_terminal)
    task = progress.add_task("train", total=total, completed=start, info="")
    return progress, task


def _validate(model, valid_set, cfg: TrainConfig) -> float:
    from mlx_lm.tuner.trainer import default_loss, evaluate

    from mlxlab.train.data import make_batch
    from mlxlab.distributed import world

    w = world()

    def batches(dataset, batch_size, max_seq_length, comm_group=None, **_):
        indices = sorted(range(len(dataset)), key=lambda i: len(dataset[i][0]))
        starts = list(range(0, len(indices), batch_size))
        starts = starts if cfg.val_batches == -1 else starts[:cfg.val_batches]
        # each rank scores its share of the same batches; mlx-lm's evaluate sums losses and tokens over ranks
        for start in starts[w.rank::w.size]:
            tokens, lengths, _, _ = make_batch(dataset, indices[start:start + batch_size])
            yield tokens, lengths

    loss = evaluate(model, valid_set.samples, cfg.batch_size, cfg.val_batches, cfg.max_seq_length,
                    loss=default_loss, iterate_batches=batches)
    model.train()
    return loss


def train(model: str | Path | None, data: str | Path, output: str | Path, *, config: TrainConfig | None = None,
          phases: list[dict] | None = None, init_adapters: str | Path | None = None, quiet: bool = False,
          general_reference: float | None = None, **overrides) -> TrainResult:
    """Fine-tune `model` (a reference for `load_model`; None = the embedded default) on chat JSONL `data`.

    Writes adapters, checkpoints, `train_log.jsonl`, `config.yaml` and `loss.png` into `output`. With
    `resume=True` it continues from the newest checkpoint there. `phases` trains one phase after another
    (see `train_phases`); `init_adapters` starts from earlier adapters instead of fresh ones. With
    `general_valid` the loss on general-ability data is watched too, and `keep_best` / `patience` keep the
    best checkpoint by both losses (`select_best`); `general_reference` is the base model's general loss
    when the starting point is not the base (a later phase).
    """
    if phases is not None:
        return train_phases(model, phases, output, config=config, quiet=quiet, **overrides)
    from mlxlab.distributed import guard

    with guard("training"):
        return _train(model, data, output, config=config, init_adapters=init_adapters, quiet=quiet,
                      general_reference=general_reference, **overrides)


@dataclass
class _Setup:
    """What the loop works with once the model, data, adapters and optimizer are ready (and restored)."""
    cfg: TrainConfig
    output: Path
    model_ref: str
    w: object                       # distributed.World
    net: object
    optimizer: object
    fingerprint: str
    data_id: str
    train_set: object
    valid_set: object
    general_set: object
    lengths: list[int]
    per_epoch: int
    num_iters: int
    num_epochs: float
    adapter_cfg: dict
    log_path: Path
    start: int
    evals: list[dict]               # {"iter", "val_loss", "general_loss"} rows, iteration 0 = the start
    say: Callable[[str], None]


def _setup(model, data, output: Path, cfg: TrainConfig, init_adapters, quiet: bool) -> _Setup:
    """Load the base and the data, attach adapters, make the optimizer; restore the newest checkpoint on resume."""
    from mlxlab import distributed as dist
    from mlxlab.device import import_mlx
    from mlxlab.train.data import batches_per_epoch, read_sets

    mx = import_mlx()
    model_ref = str(model) if model is not None else "smollm2"
    w = dist.world()
    dist.check_batch(cfg.batch_size, w)

    def look() -> bool:
        # rank 0's disk decides (no shared filesystem): the other ranks get its answer, or its error
        if checkpoints(output) and not cfg.resume:
            raise MlxlabError("the output folder holds checkpoints from an earlier run", path=output,
                              hint="pass --resume to continue it, or choose another --output")
        return bool(checkpoints(output))

    resuming = dist.from_main(look, "looking for checkpoints", w) and cfg.resume
    net, tokenizer, fingerprint = load_base(model, cfg)
    train_set, valid_set, general_set, data_id = read_sets(data, tokenizer, cfg, w)
    lengths = [len(tokens) for tokens, _ in train_set.samples]
    per_epoch = batches_per_epoch(len(lengths), cfg.batch_size)
    num_iters, num_epochs = plan(per_epoch, cfg)
    say = (lambda *a: None) if quiet or not w.main else (lambda text: print(text, file=sys.stderr))
    say(f"training {num_iters} iterations = {num_epochs:.2f} epochs of {len(lengths)} samples "
        f"({per_epoch} batches of {cfg.batch_size} per epoch, grad_accumulation {cfg.grad_accumulation})")
    if train_set.truncated:
        say(f"{train_set.truncated} training samples were longer than max_seq_length={cfg.max_seq_length} "
            f"and were truncated; {train_set.untrained} of them kept no reply token and were left out")

    mx.random.seed(cfg.seed)
    num_layers = attach_adapters(net, cfg)
    if init_adapters is not None and w.main:
        net.load_weights(str(Path(init_adapters) / "adapters.safetensors"), strict=False)
    optimizer = make_optimizer(cfg, num_iters)
    optimizer.init(net.trainable_parameters())
    s = _Setup(cfg, output, model_ref, w, net, optimizer, fingerprint, data_id, train_set, valid_set, general_set,
               lengths, per_epoch, num_iters, num_epochs, adapter_config(cfg, num_layers, model_ref),
               output / "train_log.jsonl", 0, [], say)
    begun = dist.from_main(lambda: _restore(s, resuming), "restoring the checkpoint", w)
    s.start, s.evals = begun["start"], begun["evals"]
    if w.size > 1:      # every rank starts from rank 0's adapters and optimizer state (fresh or restored)
        net.load_weights(list(dist.broadcast_arrays(dict(flatten(net.trainable_parameters())), "sharing the adapters",
                                                    w).items()), strict=False)
        for key, value in dist.broadcast_arrays(dict(flatten(optimizer.state)), "sharing the optimizer", w).items():
            set_by_path(optimizer.state, key, value)
    return s


def _restore(s: _Setup, resuming: bool) -> dict:
    """Rank 0: the newest checkpoint into the model and optimizer; the step and the evaluations so far."""
    s.output.mkdir(parents=True, exist_ok=True)
    if not resuming:
        s.log_path.unlink(missing_ok=True)
        return {"start": 0, "evals": []}
    newest = checkpoints(s.output)[max(checkpoints(s.output))]
    start = restore_checkpoint(newest, s.net, s.optimizer, s.cfg, s.fingerprint, s.data_id, s.num_iters)["step"]
    s.say(f"resuming from {newest} (iteration {start})")
    # drop log lines a killed run wrote after its last checkpoint, and a line it was killed in the middle of
    kept = [row for row in read_log(s.log_path) if row["iter"] <= start]
    if s.log_path.is_file():
        atomic_write(s.log_path, "".join(json.dumps(row) + "\n" for row in kept))
    return {"start": start, "evals": [row for row in kept if "val_loss" in row or "general_loss" in row]}


def _compiled_step(s: _Setup):
    """(step, state, stream): one compiled micro-batch step that accumulates gradients and, on `update`,
    averages them over the ranks and applies them."""
    from mlx.nn.utils import average_gradients
    from mlx.utils import tree_map
    from mlx_lm.tuner.trainer import default_loss

    from mlxlab import distributed as dist
    from mlxlab.device import import_mlx

    mx = import_mlx()
    import mlx.nn as nn

    net, optimizer, w = s.net, s.optimizer, s.w
    loss_and_grad = nn.value_and_grad(net, default_loss)
    state = [net.state, optimizer.state, mx.random.state]
    accumulation = s.cfg.grad_accumulation

    stream = dist.comm_stream() if w.size > 1 else None

    @partial(mx.compile, inputs=state, outputs=state)
    def step(tokens, lens, weight, previous, update):
        (loss, ntoks), grad = loss_and_grad(net, tokens, lens)
        if w.size > 1:
            # weigh each rank's mean by its share of the global micro-batch's tokens: the sum over ranks is then
            # the one-process gradient of the whole micro-batch (mlx-lm's plain average of the ranks' means is not)
            ntoks = ntoks * weight
            share = ntoks / mx.distributed.all_sum(ntoks, stream=stream)     # one scalar all-reduce per micro-batch
            grad = tree_map(lambda g: g * share, grad)
        if previous is not None:
            grad = tree_map(lambda a, b: a + b, grad, previous)
        if update:
            grad = average_gradients(grad) if w.size == 1 else tree_map(
                lambda g: g * w.size, average_gradients(grad, communication_stream=stream))
            if accumulation > 1:
                grad = tree_map(lambda g: g / accumulation, grad)
            optimizer.update(net, grad)
            grad = None
        return loss, ntoks, grad

    return step, state, stream


def _micro_batches(s: _Setup):
    """micro_batch(index) -> (tokens, lengths, real, slots, weight): this rank's slice of global micro-batch `index`."""
    from mlxlab.device import import_mlx
    from mlxlab.train.data import batch_order, make_batch

    mx = import_mlx()
    orders: dict[int, list[list[int]]] = {}

    def micro_batch(index: int):
        epoch, position = divmod(index, s.per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = batch_order(s.lengths, s.cfg.batch_size, seed=s.cfg.seed, epoch=epoch)
        batch = orders[epoch][position]
        mine = batch[s.w.rank::s.w.size]    # this rank's slice of the global batch
        if not mine:                        # a short last batch: take part in the collectives with a zero weight
            return (*make_batch(s.train_set.samples, batch[:1])[:2], 0, 0, mx.array(0.0))
        return (*make_batch(s.train_set.samples, mine), mx.array(1.0))

    return micro_batch


class _Watch:
    """Validation and general losses at evaluation steps, and the best checkpoint so far (keep_best, patience)."""

    def __init__(self, s: _Setup, general_reference: float | None):
        self.s, self.general_reference = s, general_reference
        self.best_dir = s.output / "best"
        self.on = (s.valid_set is not None or s.general_set is not None) and (
            s.cfg.keep_best or s.cfg.patience > 0 or s.general_set is not None)

    def evaluate_at(self, it: int) -> dict:
        row = {"iter": it}
        if self.s.valid_set is not None:
            row["val_loss"] = _validate(self.s.net, self.s.valid_set, self.s.cfg)
        if self.s.general_set is not None:
            row["general_loss"] = _validate(self.s.net, self.s.general_set, self.s.cfg)
        return row

    def reference(self) -> float | None:
        if self.general_reference is not None:
            return self.general_reference
        return next((r.get("general_loss") for r in self.s.evals if r["iter"] == 0), None)

    def best(self) -> tuple[dict | None, str | None]:
        if not self.on:
            return None, None
        return select_best(self.s.evals, reference=self.reference(), tolerance=self.s.cfg.forgetting_tolerance)

    def consider(self, row: dict) -> None:
        """Record an evaluation; keep its adapters aside when it is the best so far."""
        self.s.evals.append(row)
        best, _ = self.best()
        if self.s.cfg.keep_best and best is row and self.s.w.main:
            save_adapters(self.s.net, self.best_dir, self.s.adapter_cfg)
            atomic_write(self.best_dir / "best.json", json.dumps(row))

    def patience_ran_out(self, it: int) -> bool:
        best, _ = self.best()
        since = sum(1 for r in self.s.evals if best is None or r["iter"] > best["iter"])
        return self.s.cfg.patience > 0 and since >= self.s.cfg.patience and it < self.s.num_iters


@dataclass
class _Totals:
    """What the steps add up to, for the result."""
    real: int = 0                   # real (not padding) tokens this rank trained on
    slots: int = 0                  # token slots of its batches, padding included
    mine: int = 0                   # real tokens of this rank's slices
    seconds: float = 0.0
    tokens: float = 0.0             # real tokens of the whole group
    last_loss: float = float("nan")
    val_loss: float | None = None
    general_loss: float | None = None
    stopped: int | None = None      # iteration where patience ran out


def _train(model, data, output, *, config, init_adapters, quiet, general_reference, **overrides) -> TrainResult:
    from mlx_lm.tuner.trainer import grad_checkpoint
    from mlx_lm.utils import maybe_set_recommended_wired_limit

    cfg = config if config is not None else TrainConfig()
    cfg = resolve(TrainConfig, **{**dataclasses.asdict(cfg), **overrides})
    output = Path(output)
    if cfg.grad_accumulation < 1 or cfg.batch_size < 1:
        raise MlxlabError("batch_size and grad_accumulation must be at least 1")
    s = _setup(model, data, output, cfg, init_adapters, quiet)
    watch = _Watch(s, general_reference)
    if s.w.main:
        save_resolved(output / "config.yaml", cfg)
    maybe_set_recommended_wired_limit()
    if cfg.grad_checkpoint:
        grad_checkpoint(s.net.layers[0])
    step, state, stream = _compiled_step(s)
    micro_batch = _micro_batches(s)
    save_at = set(cfg.save_at) | ({i for i in range(cfg.save_every, s.num_iters + 1, cfg.save_every)}
                                 if cfg.save_every > 0 else set())
    totals = _Totals()
    evaluated = s.valid_set is not None or s.general_set is not None

    s.net.train()
    progress, task = _progress(s.num_iters, s.start, quiet)
    with progress, (s.log_path.open("a", encoding="utf-8") if s.w.main else io.StringIO()) as log:
        if watch.on and s.start == 0:
            row = watch.evaluate_at(0)
            log.write(json.dumps(row) + "\n")
            watch.consider(row)
            s.say("before training: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "iter"))
        for it in range(s.start + 1, s.num_iters + 1):
            row = _iteration(s, it, step, state, stream, micro_batch, totals)
            log.write(json.dumps(row) + "\n")
            if evaluated and ((cfg.steps_per_eval and it % cfg.steps_per_eval == 0) or it == s.num_iters):
                scores = watch.evaluate_at(it)
                totals.val_loss, totals.general_loss = scores.get("val_loss"), scores.get("general_loss")
                log.write(json.dumps(scores) + "\n")
                if watch.on:
                    watch.consider(scores)
                    if watch.patience_ran_out(it):
                        totals.stopped = it
            log.flush()
            if it in save_at and s.w.main:
                _checkpoint(s, it)
            progress.update(task, advance=1, info=f"loss {totals.last_loss:.3f} {row['tokens_per_second']:.0f} tok/s")
            if totals.stopped is not None:
                s.say(f"stopping early at iteration {it}: {cfg.patience} evaluation(s) without a better checkpoint")
                break
    return _finish(s, watch, totals)


def _iteration(s: _Setup, it: int, step, state, stream, micro_batch, totals: _Totals) -> dict:
    """One optimizer step (grad_accumulation micro-batches); its log row."""
    from mlxlab.device import import_mlx

    mx = import_mlx()
    accumulation, w = s.cfg.grad_accumulation, s.w
    # a per-step key that depends on (seed, step) only: resume restores dropout exactly
    mx.random.seed(s.cfg.seed * 1_000_003 + it)
    tic = time.perf_counter()
    grad, loss_sum, tok_sum, real_step = None, mx.array(0.0), mx.array(0), 0
    for micro in range(accumulation):
        tokens, lens, real, slots, weight = micro_batch((it - 1) * accumulation + micro)
        loss, ntoks, grad = step(tokens, lens, weight, grad, micro == accumulation - 1)
        loss_sum = loss_sum + loss * ntoks
        tok_sum = tok_sum + ntoks
        mx.eval(state, loss_sum, tok_sum, grad)
        real_step += real
        totals.real += real
        totals.slots += slots
    totals.mine += real_step
    if w.size > 1:              # the loss and the tokens of the whole group
        loss_sum, tok_sum, real_step = (x.item() for x in mx.distributed.all_sum(mx.stack(
            [loss_sum, tok_sum.astype(mx.float32), mx.array(float(real_step))]), stream=stream))
        real_step = int(real_step)
    elapsed = time.perf_counter() - tic
    totals.seconds += elapsed
    totals.tokens += real_step
    totals.last_loss = float(loss_sum / tok_sum)
    if not math.isfinite(totals.last_loss):
        raise MlxlabError(f"the loss became {totals.last_loss} at iteration {it}",
                          hint="lower --learning-rate, or check the data for empty replies")
    return {"iter": it, "loss": totals.last_loss, "lr": s.optimizer.learning_rate.item(),
            "tokens": real_step, "tokens_per_second": real_step / elapsed,
            "peak_memory_gb": mx.get_peak_memory() / 1e9}


def _checkpoint(s: _Setup, it: int) -> None:
    epoch, position = divmod(it * s.cfg.grad_accumulation, s.per_epoch)
    save_checkpoint(s.output, it, s.net, s.optimizer, {
        "step": it, "epoch": epoch, "position": position, "num_iters": s.num_iters,
        "rng": f"mx.random.seed(seed * 1000003 + step) before each step; seed={s.cfg.seed}",
        "model": s.model_ref, "model_fingerprint": s.fingerprint, "data_hash": s.data_id,
        "config": to_dict(s.cfg)["train"]}, s.adapter_cfg)


def _finish(s: _Setup, watch: _Watch, totals: _Totals) -> TrainResult:
    """Gather the ranks' shares, keep the best adapters, write the result; rank 0 alone writes."""
    from mlxlab import distributed as dist
    from mlxlab.device import import_mlx

    mx = import_mlx()
    cfg, output, w = s.cfg, s.output, s.w
    rank_tokens = dist.gather_json(totals.mine, "collecting each rank's share", w)
    best, reason = watch.best()
    val_loss, general_loss = totals.val_loss, totals.general_loss
    if cfg.keep_best and best is not None:
        val_loss, general_loss = best.get("val_loss"), best.get("general_loss")
    plot = None
    if w.main:
        save_adapters(s.net, output, s.adapter_cfg)
        if cfg.keep_best and best is not None and (watch.best_dir / "adapters.safetensors").is_file():
            shutil.copy2(watch.best_dir / "adapters.safetensors", output / "adapters.safetensors")
            s.say(f"kept the best checkpoint: {reason}")
        from mlxlab.train.train_log import plot_loss

        plot = plot_loss(s.log_path, output / "loss.png")
    result = TrainResult(
        adapters=output, checkpoints=checkpoints(output) if w.main else {}, final_loss=totals.last_loss,
        val_loss=val_loss, tokens_per_second=totals.tokens / totals.seconds if totals.seconds else 0.0,
        peak_memory_gb=mx.get_peak_memory() / 1e9,
        padding_fraction=1 - totals.real / totals.slots if totals.slots else 0.0,
        num_iters=s.num_iters, num_epochs=s.num_epochs, truncated=s.train_set.truncated,
        dropped=s.train_set.untrained, log=s.log_path, loss_plot=plot,
        best_iter=best["iter"] if best is not None and cfg.keep_best else None,
        best_reason=reason if cfg.keep_best else None, general_loss=general_loss,
        general_base_loss=watch.reference(), stopped_early=totals.stopped, world_size=w.size,
        rank_tokens=rank_tokens)
    if w.main:
        atomic_write(output / "result.json", json.dumps(result.to_json(), indent=2))
    s.say(f"done: loss {totals.last_loss:.4f}" + (f", val {val_loss:.4f}" if val_loss is not None else "")
          + f", {result.tokens_per_second:.0f} tok/s, padding {result.padding_fraction:.1%}, "
          f"peak {result.peak_memory_gb:.2f} GB -> {output}")
    return result


def train_phases(model: str | Path | None, phases: list[dict], output: str | Path, *,
                 config: TrainConfig | None = None, quiet: bool = False, **overrides) -> TrainResult:
    """Train phase after phase (each a dict with `data` and any TrainConfig keys); each starts from the last adapters.

    Phase i writes to `output/phase_i`; the final adapters are also copied to `output`, with a combined
    `result.json`, `train_log.jsonl` and `loss.png` whose iterations run on across the phases
    (`combine_phases`). With `resume=True`, finished phases are skipped and the interrupted one resumes from
    its newest checkpoint.
    """
    if not phases:
        raise MlxlabError("phases is empty", hint='give a list like [{"data": "phase1/", "num_epochs": 1}, ...]')
    from mlxlab.distributed import from_main, world

    output = Path(output)
    resume = overrides.get("resume", config.resume if config is not None else False)
    previous, result, reference, saved = None, None, None, None
    for number, phase in enumerate(phases, start=1):
        phase = dict(phase)
        if "data" not in phase:
            raise MlxlabError(f"phase {number} has no data")
        data = phase.pop("data")
        folder = output / f"phase_{number}"
        done = folder / "result.json"
        saved = from_main(lambda: json.loads(done.read_text(encoding="utf-8")) if resume and done.is_file() and (
            folder / "adapters.safetensors").is_file() else None, "checking the finished phases")
        if saved is not None:
            previous = folder
            reference = reference or saved.get("general_base_loss")
            continue
        # later phases start from earlier adapters: forgetting is still measured against the base model
        result = train(model, data, folder, config=config, init_adapters=previous, quiet=quiet,
                       general_reference=reference, **{**overrides, **phase})
        reference = reference or result.general_base_loss
        previous = folder
    if world().main:
        output.mkdir(parents=True, exist_ok=True)
        for name in ("adapters.safetensors", "adapter_config.json"):
            shutil.copy2(previous / name, output / name)
    return TrainResult.from_json(from_main(lambda: combine_phases(output, len(phases)), "combining the phases"))
