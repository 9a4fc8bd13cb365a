"""Training checkpoints that truly resume: adapters, optimizer state and the step, written atomically.

A checkpoint is `checkpoints/iter_NNNNNN/` with mlx-lm's adapter files, `optimizer.safetensors` and
`state.json` (step, data position, RNG rule, the base model's fingerprint, the data hash, the settings).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mlxlab.config import TrainConfig, to_dict
from mlxlab.errors import MlxlabError
from mlxlab.files import atomic_path, atomic_write, recover_dir, replace_dir

# Settings that change the trajectory: a checkpoint made under other values cannot be resumed.
_TRAJECTORY = ("method", "lora_rank", "lora_scale", "lora_dropout", "num_layers", "lora_keys", "optimizer",
               "learning_rate", "warmup_steps", "lr_schedule", "batch_size", "grad_accumulation",
               "max_seq_length", "mask_prompt", "quantize", "seed")


def flatten(tree) -> list:
    """(dotted key, array) pairs of an mlx parameter or optimizer-state tree."""
    from mlx.utils import tree_flatten
    return tree_flatten(tree)


def _write_atomic(path: Path, write) -> None:
    """`write(tmp)` then an fsynced rename of tmp to `path` (see `mlxlab.files`)."""
    with atomic_path(path) as tmp:
        write(tmp)


def save_adapters(model, folder: Path, config: dict) -> None:
    """adapters.safetensors + adapter_config.json in mlx-lm's format, each written atomically."""
    import mlx.core as mx
    from mlx_lm.utils import save_config

    folder.mkdir(parents=True, exist_ok=True)
    weights = dict(flatten(model.trainable_parameters()))
    # mx.save_safetensors appends .safetensors to names without it, so the temp name keeps the suffix
    with atomic_path(folder / "adapters.safetensors", suffix=".safetensors") as tmp:
        mx.save_safetensors(str(tmp), weights)
    _write_atomic(folder / "adapter_config.json", lambda p: save_config(dict(config), p))


def save_checkpoint(output: Path, step: int, model, optimizer, state: dict, config: dict) -> Path:
    """checkpoints/iter_NNNNNN/: adapters, optimizer state and state.json (step, data position, RNG, model)."""
    import mlx.core as mx

    final = output / "checkpoints" / f"iter_{step:06d}"
    staging = final.with_name(final.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    save_adapters(model, staging, config)
    with atomic_path(staging / "optimizer.safetensors", suffix=".safetensors") as tmp:
        mx.save_safetensors(str(tmp), dict(flatten(optimizer.state)))
    atomic_write(staging / "state.json", json.dumps(state, indent=2))
    # an older checkpoint of this step stays on disk (as iter_N.old) until the new one is in place
    replace_dir(staging, final)
    return final


def checkpoints(output: Path) -> dict[int, Path]:
    """Complete checkpoints under `output` by iteration."""
    found = {}
    for old in (Path(output) / "checkpoints").glob("iter_*.old"):
        recover_dir(old.with_name(old.name[:-4]))          # a crash between replace_dir's two renames
    for path in (Path(output) / "checkpoints").glob("iter_*"):
        if path.name[5:].isdigit() and (path / "state.json").is_file():
            found[int(path.name[5:])] = path
    return dict(sorted(found.items()))


def set_by_path(tree, key: str, value) -> None:
    """Set the leaf at dotted `key` (as `flatten` names it) of `tree` to `value`."""
    # the optimizer state must be updated in place: the compiled step holds on to its containers
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def restore_checkpoint(path: Path, model, optimizer, cfg: TrainConfig, fingerprint: str, data_id: str,
                       num_iters: int | None = None) -> dict:
    """Load a checkpoint's adapters and optimizer state after checking it belongs to this model, data and setup.

    `num_iters` is this run's planned length: a cosine schedule decays over the length it was planned for, so a
    different length would silently bend the rest of the trajectory; that is refused.
    """
    import mlx.core as mx

    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if state.get("model_fingerprint") != fingerprint:
        raise MlxlabError(f"this checkpoint was made from a different base model ({state.get('model')})",
                          path=path, hint="resume with the same --model, or train into a new --output")
    if state.get("data_hash") != data_id:
        raise MlxlabError("this checkpoint was made from different training data", path=path,
                          hint="resume with the same --data, or train into a new --output")
    saved = state.get("config", {})
    changed = [k for k in _TRAJECTORY if k in saved and saved[k] != to_dict(cfg)["train"][k]]
    if changed:
        raise MlxlabError("cannot resume with changed settings: " + ", ".join(
            f"{k} {saved[k]!r} -> {getattr(cfg, k)!r}" for k in changed), path=path,
            hint="use the settings of the interrupted run, or train into a new --output")
    planned = state.get("num_iters")
    if num_iters is not None and planned is not None and planned != num_iters and cfg.lr_schedule != "constant":
        raise MlxlabError(f"cannot resume: this run was planned for {planned} iterations and now asks for {num_iters}; "
                          f"its {cfg.lr_schedule} learning-rate schedule decays over the planned length", path=path,
                          hint=f"resume with the interrupted run's length (--num-iters {planned}), or train into a "
                               "new --output")
    model.load_weights(str(path / "adapters.safetensors"), strict=False)
    for key, value in mx.load(str(path / "optimizer.safetensors")).items():
        set_by_path(optimizer.state, key, value)
    return state
