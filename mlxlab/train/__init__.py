"""train: chat datasets, the LoRA/DoRA/QLoRA loop, checkpoints, fuse.

`from mlxlab.train import train`; fuse is `from mlxlab.train.fuse import fuse` (the module has its name).

The names below load on first use (mlxlab.lazy).
"""

from mlxlab.lazy import exports as _exports

__getattr__, __dir__, __all__ = _exports(__name__, {
    "loop": "train train_phases TrainResult", "phases": "read_phases", "data": "read_jsonl read_sets"})
