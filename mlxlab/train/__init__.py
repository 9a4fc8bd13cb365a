"""train: chat datasets, the LoRA/DoRA/QLoRA loop, checkpoints, fuse.

`from mlxlab.train import train`; fuse is `from mlxlab.train.fuse import fuse` (the module has its name).

Public names load on first use (see mlxlab.lazy), so importing the package imports no MLX.
"""

from mlxlab.lazy import exports as _exports

_LAZY = {
    "train": "mlxlab.train.loop",
    "train_phases": "mlxlab.train.loop",
    "TrainResult": "mlxlab.train.loop",
    "read_phases": "mlxlab.train.loop",
    "read_jsonl": "mlxlab.train.data",
    "read_sets": "mlxlab.train.data",
}

__all__ = list(_LAZY)
__getattr__, __dir__ = _exports(__name__, _LAZY)
