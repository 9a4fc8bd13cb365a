"""Merge LoRA / DoRA adapters into their base model: an mlx-lm-loadable Hugging Face-layout directory.

The adapters are mlx-lm's (adapter_config.json + adapters.safetensors), applied and merged with mlx-lm's
own layers (`LoRALinear.fuse`, `DoRALinear.fuse`). A quantized (4-bit) base is dequantized by default, so
the result can be exported to any GGUF type; `dequantize=False` re-quantizes the merged layers instead.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mlxlab.errors import MlxlabError
from mlxlab.files import replace_dir

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapters.safetensors"
# config.json keys that must agree between the adapters' base and this base
_SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "intermediate_size", "vocab_size")


@dataclass(frozen=True)
class FuseResult:
    """A fused model directory and what went into it."""
    path: Path               # mlx-lm-loadable HF-layout directory
    base: Path               # the base model directory
    adapters: Path
    fused_layers: int        # linear layers that received an adapter
    quantized: bool          # True when the output keeps MLX quantization
    seconds: float


def read_adapter_config(adapters: Path) -> dict:
    """adapter_config.json of an mlx-lm adapter directory, checked, with the weights file readable."""
    adapters = Path(adapters).expanduser()
    if adapters.is_file() and adapters.name == ADAPTER_WEIGHTS:
        adapters = adapters.parent
    config_path, weights_path = adapters / ADAPTER_CONFIG, adapters / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise MlxlabError(f"not an adapter directory: {path.name} is missing", path=adapters,
                              hint="pass the directory `mlxlab train` (or mlx_lm.lora) wrote its adapters to")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise MlxlabError(f"not valid JSON: {exc.msg}", path=config_path, line=exc.lineno, column=exc.colno) from exc
    if not isinstance(config, dict) or ("lora_parameters" not in config and config.get("fine_tune_type") != "full"):
        raise MlxlabError("adapter config has no lora_parameters", path=config_path,
                          hint="this file was not written by mlx-lm's or mlxlab's trainer")
    from mlxlab.device import import_mlx

    mx = import_mlx()
    try:
        weights = mx.load(str(weights_path))
    except Exception as exc:  # mlx raises RuntimeError / ValueError on truncated or foreign files
        raise MlxlabError(f"adapter weights are corrupt or truncated ({exc})", path=weights_path,
                          hint="re-run training, or point at an earlier checkpoint") from exc
    if not weights:
        raise MlxlabError("adapter weights file holds no tensors", path=weights_path)
    return config


def _check_same_base(adapter_config: dict, base_config: dict, adapters: Path) -> None:
    """Refuse adapters trained on a base whose shape differs from this one (when their base is known here)."""
    trained_on = adapter_config.get("model")
    if not trained_on or not (Path(str(trained_on)).expanduser() / "config.json").is_file():
        return
    other = json.loads((Path(str(trained_on)).expanduser() / "config.json").read_text())
    diffs = [f"{k}: {other.get(k)} vs {base_config.get(k)}" for k in _SHAPE_KEYS if other.get(k) != base_config.get(k)]
    if diffs:
        raise MlxlabError(f"these adapters were trained on another base model ({trained_on}): " + "; ".join(diffs),
                          path=adapters / ADAPTER_CONFIG, hint="fuse them into the model they were trained on")


def fuse(model: str | Path, adapters: str | Path, output: str | Path, *, dequantize: bool = True,
         force: bool = False) -> FuseResult:
    """Merge the adapters in `adapters` into `model` and save an mlx-lm-loadable directory at `output`.

    A quantized base is dequantized (`dequantize=True`, the default: ready for any GGUF type) or its merged
    layers re-quantized with the base's bits and group size (`dequantize=False`). The directory appears
    atomically; an existing `output` is replaced only with `force`.
    """
    from mlxlab.device import import_mlx
    from mlxlab.models import resolve_model

    start = time.perf_counter()
    import_mlx()
    base = resolve_model(model)
    adapters = Path(adapters).expanduser()
    adapter_config = read_adapter_config(adapters)
    if adapters.is_file():
        adapters = adapters.parent
    output = Path(output).expanduser()
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not force:
        raise MlxlabError("output exists; refusing to overwrite it", path=output,
                          hint="choose another output, or pass force=True (--force) to replace it")
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load, save

    base_config = json.loads((base / "config.json").read_text())
    _check_same_base(adapter_config, base_config, adapters)
    try:
        net, tokenizer, config = load(str(base), adapter_path=str(adapters), return_config=True)
    except ValueError as exc:
        if "incompatible" in str(exc) or "shape" in str(exc):
            raise MlxlabError("these adapters do not fit this base model (trained on another base?):\n"
                              + str(exc).split("\n", 1)[-1], path=adapters,
                              hint="fuse them into the model they were trained on") from exc
        raise MlxlabError(f"mlx-lm could not load the base with these adapters: {exc}", path=adapters) from exc
    fused = [(name, module.fuse(dequantize=dequantize)) for name, module in net.named_modules()
             if hasattr(module, "fuse")]
    if fused:
        net.update_modules(tree_unflatten(fused))
    quantized = bool(config.get("quantization"))
    if dequantize and quantized:
        net = dequantize_model(net)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
        quantized = False
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        save(staging, base, net, tokenizer, config, donate_model=False)
        for extra in ("chat_template.jinja", "tokenizer.model"):      # what save_pretrained may not rewrite
            if (base / extra).is_file() and not (staging / extra).exists():
                shutil.copy(base / extra, staging / extra)
        (staging / "mlxlab_fuse.json").write_text(json.dumps(
            {"base": str(base), "adapters": str(adapters), "fused_layers": len(fused), "quantized": quantized},
            indent=2) + "\n")
        replace_dir(staging, output)          # an older fused model stays until the new one is in place
    except OSError as exc:
        raise MlxlabError(f"could not write the fused model: {exc.strerror or exc}", path=output,
                          hint="check free disk space and permissions") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return FuseResult(path=output, base=base, adapters=adapters, fused_layers=len(fused), quantized=quantized,
                      seconds=time.perf_counter() - start)
