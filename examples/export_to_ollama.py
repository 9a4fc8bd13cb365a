"""Take trained adapters to Ollama: fuse them into the base, write a q4_k_m GGUF, print `ollama create`.

    python examples/export_to_ollama.py --adapters quickstart/adapters         # after quickstart_m1.py
    python examples/export_to_ollama.py --adapters runs/default/adapters --model smollm2 --name jolie
    python examples/export_to_ollama.py --tiny --adapters DIR                  # offline, embedded SmolLM2

The GGUF is checked against MLX (llama.cpp's logits on a probe text) before it is kept, and a Modelfile
with the model's chat template is written next to it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlxlab  # noqa: F401  (binds OpenBLAS before mlx loads, on Linux)

STUDENT = "mlx-community/Qwen2.5-0.5B-Instruct-4bit"


def main(argv: list[str] | None = None) -> int:
    """Fuse, export, print the Ollama command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="offline: the embedded SmolLM2 as the base")
    parser.add_argument("--model", default=None, help=f"base model of the adapters (default: {STUDENT})")
    parser.add_argument("--adapters", default="quickstart/adapters", help="adapter folder written by train")
    parser.add_argument("--output", default="ollama", help="folder for the fused model and the GGUF")
    parser.add_argument("--out-type", default="q4_k_m", help="GGUF type (q4_k_m: ~4.8 bits per weight)")
    parser.add_argument("--name", default="jolie", help="the Ollama model name")
    args = parser.parse_args(argv)
    model = args.model or ("smollm2" if args.tiny else STUDENT)

    from mlxlab.train.fuse import fuse
    from mlxlab.gguf import export_gguf

    out = Path(args.output)
    fused = fuse(model, args.adapters, out / "fused", force=True)
    print(f"fused {fused.fused_layers} layers in {fused.seconds:.1f} s -> {fused.path}")
    gguf = export_gguf(fused.path, out / f"{args.name}-{args.out_type}.gguf", out_type=args.out_type, force=True)
    print(f"{gguf.path}: {gguf.size_bytes / 1e6:.1f} MB; llama.cpp vs MLX: max abs logit difference "
          f"{gguf.max_abs_logit_diff:.3g}, top-1 agreement {gguf.top1_agreement:.1%}")
    print(f"\n  ollama create {args.name} -f {gguf.modelfile}\n  ollama run {args.name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
