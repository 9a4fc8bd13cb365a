"""The model a training starts from: the base loaded (and quantized for QLoRA), its fingerprint, and the
adapters attached, in mlx-lm's adapter format so `mlx_lm.load(base, adapter_path=...)` reads the result."""

from __future__ import annotations

import sys

from mlxlab.config import TrainConfig, to_dict
from mlxlab.errors import MlxlabError
from mlxlab.train.checkpoints import flatten


def model_fingerprint(model) -> str:
    """A short hash of the base model's parameter names, shapes and leading values (dtype-independent)."""
    import hashlib

    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    digest = hashlib.sha256()
    for name, value in sorted(tree_flatten(model.parameters())):
        digest.update(f"{name}:{tuple(value.shape)}".encode())
        head = value.reshape(-1)[:32]
        # float16 is exact for 16-bit originals upcast to float32, so CPU and Metal runs agree
        head = head.astype(mx.float16) if mx.issubdtype(head.dtype, mx.floating) else head
        digest.update(np.array(head).tobytes())
    return digest.hexdigest()[:16]


def load_base(model_ref, cfg: TrainConfig):
    """(model, tokenizer, fingerprint) with the device's dtype, quantized on load when `cfg.quantize` asks."""
    import mlx.nn as nn

    from mlxlab.device import apply_dtype
    from mlxlab.models import load_model

    # An explicit `quantize` asks for real QLoRA: keep a 4-bit base 4-bit even where the CPU policy
    # would expand it.
    model, tokenizer = load_model(model_ref, dequantize_on_load="never" if cfg.quantize else None)
    fingerprint = model_fingerprint(model)
    if cfg.quantize:
        if cfg.quantize not in (4, 8):
            raise MlxlabError(f"quantize must be 4 or 8, found {cfg.quantize}")
        if any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules()):
            print("the base model is already quantized; quantize is ignored", file=sys.stderr)
        else:
            group = 64
            nn.quantize(model, group_size=group, bits=cfg.quantize,
                        class_predicate=lambda _, m: hasattr(m, "to_quantized") and m.weight.shape[-1] % group == 0)
            # cast scales and norms only: the CPU policy would expand the 4-bit weights back to float (plain LoRA)
            apply_dtype(model, dequantize_on_load="never")
    return model, tokenizer, fingerprint


def adapter_config(cfg: TrainConfig, num_layers: int, model_ref: str) -> dict:
    """mlx-lm's adapter_config.json fields, so `mlx_lm.load(base, adapter_path=...)` works."""
    lora = {"rank": cfg.lora_rank, "scale": cfg.lora_scale, "dropout": cfg.lora_dropout}
    if cfg.lora_keys:
        lora["keys"] = list(cfg.lora_keys)
    return {"fine_tune_type": cfg.method, "num_layers": num_layers, "model": model_ref,
            "lora_parameters": None if cfg.method == "full" else lora,
            "mlxlab": to_dict(cfg)["train"]}


def attach_adapters(model, cfg: TrainConfig) -> int:
    """Freeze the base and add trainable adapters (or unfreeze blocks for `full`); return the layers adapted."""
    import mlx.nn as nn
    from mlx_lm.tuner.utils import linear_to_lora_layers

    layers = len(model.layers)
    num_layers = layers if cfg.num_layers < 0 or cfg.num_layers > layers else cfg.num_layers
    model.freeze()
    if cfg.method == "full":
        if any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules()):
            raise MlxlabError("method full cannot train a quantized base model",
                              hint="use method lora (QLoRA), or load an unquantized model")
        for layer in model.layers[-num_layers:]:
            layer.unfreeze()
    elif cfg.method in ("lora", "dora"):
        params = {"rank": cfg.lora_rank, "scale": cfg.lora_scale, "dropout": cfg.lora_dropout}
        if cfg.lora_keys:
            params["keys"] = list(cfg.lora_keys)
        linear_to_lora_layers(model, num_layers, params, use_dora=cfg.method == "dora")
    else:
        raise MlxlabError(f"unknown method {cfg.method!r}", hint="use one of: lora, dora, full")
    if not any(True for _ in flatten(model.trainable_parameters())):
        raise MlxlabError("nothing to train: no module matched lora_keys", hint="check --lora-keys")
    return num_layers
