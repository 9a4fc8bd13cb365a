"""The tables GGUF export, import and tokenizer files share: which mlx-lm architectures map to which GGUF
architecture, and llama.cpp's pre-tokenizer regexes. Adding an architecture starts here.
"""

# mlx-lm model_type -> (GGUF architecture, q/k rows permuted for llama.cpp's rope, gemma's (1 + w) norms)
ARCHITECTURES: dict[str, tuple[str, bool, bool]] = {
    "llama": ("llama", True, False),
    "mistral": ("llama", True, False),
    "qwen2": ("qwen2", False, False),
    "qwen3": ("qwen3", False, False),
    "phi3": ("phi3", False, False),
    "gemma2": ("gemma2", False, True),
    "gemma3_text": ("gemma3", False, True),
}

# GGUF architecture -> (mlx-lm model_type, HF architectures entry) of what import converts; q/k permutation and
# gemma's (1 + w) norms come from ARCHITECTURES above, so import undoes exactly what export does
IMPORTABLE = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM"),
              "qwen3": ("qwen3", "Qwen3ForCausalLM"), "phi3": ("phi3", "Phi3ForCausalLM"),
              "gemma2": ("gemma2", "Gemma2ForCausalLM"), "gemma3": ("gemma3_text", "Gemma3ForCausalLM")}

# Pre-tokenizer regexes per `tokenizer.ggml.pre`, as llama.cpp's llama-vocab.cpp applies them
# (a list is applied in sequence; the first of SmolLM's isolates every digit).
GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_RE = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
             r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
            r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {
    **dict.fromkeys(["gpt2", "gpt-2", "mpt", "olmo", "jais", "default"], [GPT2_RE]),
    **dict.fromkeys(["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"],
                    [r"\p{N}", GPT2_RE]),
    **dict.fromkeys(["llama-bpe", "llama3", "dbrx", "smaug-bpe"], [LLAMA3_RE]),
    **dict.fromkeys(["qwen2", "stablelm2", "deepseek-r1-qwen"], [QWEN2_RE]),
}
