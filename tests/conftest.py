"""Session fixtures: the embedded SmolLM2 (as GGUF and imported), a real tiny BPE tokenizer, tiny random models.

Tests never reach the network: HF_HUB_OFFLINE is set before anything imports huggingface_hub, and
mlxlab's cache points at a session temp dir (or at `$MLXLAB_TEST_CACHE`, to reuse imports across runs).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import mlxlab  # noqa: E402  (binds OpenBLAS before anything imports mlx.core)
import mlxlab.device  # noqa: E402

mlxlab.device.bind_blas()

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Training text for the tiny tokenizer: plain English, some code and numbers, so merges are real.
_CORPUS = """\
Jolie is a service-oriented programming language. A Jolie program defines services that talk to each
other by sending and receiving messages over ports. An input port says where a service listens and which
operations it offers; an output port says how to reach another service. Interfaces list operations,
and each operation is either one-way or request-response.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. How vexingly
quick daft zebras jump! Sphinx of black quartz, judge my vow.
Fine-tuning a small language model on a laptop takes three steps: write a few examples by hand,
generate many more with a teacher model, and train low-rank adapters on the result. Then merge the
adapters into the base model and export it to GGUF so that llama.cpp can serve it.
def add(a, b):
    return a + b
service Calculator { execution: concurrent inputPort CalcPort { location: "socket://localhost:8000"
protocol: http interfaces: CalcInterface } main { sum( request )( response ) { response = request.x + request.y } } }
In 2024 the team measured 60 hours of synthetic data generation on one GPU; 100 samples took 4 hours.
Numbers like 3.14159, 42, 1000 and 65536 appear in text, and so do emails like dev@example.org.
User: What is an output port? Assistant: An output port tells a Jolie service how to call another one.
User: Write a haiku about autumn. Assistant: Leaves drift on cold wind / the river carries them home / quiet,
the year bends.
"""


def _train_tokenizer(dest: Path, vocab_size: int = 640) -> Path:
    """Train a byte-level BPE tokenizer on the built-in corpus and save it in HF layout."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=1,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(dest / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "unk_token": None, "model_max_length": 2048,
              "clean_up_tokenization_spaces": False, "chat_template": CHATML_TEMPLATE}
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return dest


_BASE = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=512, rope_theta=10000.0)
# model_type -> extra config mlx-lm's class for it needs (beyond _BASE)
_ARCH_CONFIGS = {
    "llama": dict(architectures=["LlamaForCausalLM"], tie_word_embeddings=False),
    "mistral": dict(architectures=["MistralForCausalLM"], tie_word_embeddings=False),
    "qwen2": dict(architectures=["Qwen2ForCausalLM"], tie_word_embeddings=True),
    "qwen3": dict(architectures=["Qwen3ForCausalLM"], tie_word_embeddings=True, head_dim=16),
    "phi3": dict(architectures=["Phi3ForCausalLM"], tie_word_embeddings=False),
    "gemma2": dict(architectures=["Gemma2ForCausalLM"], head_dim=16, query_pre_attn_scalar=16,
                   attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=256),
    # llama.cpp assumes gemma3's 5-local-1-global layer pattern, so the tiny one has 6 layers
    "gemma3_text": dict(architectures=["Gemma3ForCausalLM"], num_hidden_layers=6, head_dim=16, query_pre_attn_scalar=16,
                        sliding_window=256, sliding_window_pattern=6),
}


def build_tiny_model(arch: str, dest: Path, tokenizer_dir: Path, *, seed: int = 0, **overrides) -> Path:
    """Build a tiny random `arch` model with mlx-lm's own classes and save it as an HF-layout dir."""
    mx = mlxlab.device.import_mlx()
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes
    from tokenizers import Tokenizer

    if arch not in _ARCH_CONFIGS:
        raise ValueError(f"no tiny config for {arch!r}; known: {sorted(_ARCH_CONFIGS)}")
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    config = {"model_type": arch, **_BASE, **_ARCH_CONFIGS[arch],
              "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
              "eos_token_id": tokenizer.token_to_id("<|im_end|>"), **overrides}
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)                      # layer initialisers draw from MLX's global generator
    model = model_class(args_class.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    dest.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})
    (dest / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, dest / name)
    return dest


@pytest.fixture(scope="session", autouse=True)
def mlxlab_cache(tmp_path_factory) -> Path:
    """Point mlxlab's cache at `$MLXLAB_TEST_CACHE` or a session temp dir, never at ~/.cache."""
    reuse = os.environ.get("MLXLAB_TEST_CACHE")
    path = Path(reuse).expanduser() if reuse else tmp_path_factory.mktemp("mlxlab-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLXLAB_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The embedded SmolLM2-135M-Instruct Q4_1 GGUF."""
    from mlxlab.models import embedded_gguf

    return embedded_gguf()


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf, mlxlab_cache) -> Path:
    """The embedded model imported into the session cache (once per session, or reused from MLXLAB_TEST_CACHE)."""
    from mlxlab.models import import_gguf

    return import_gguf(smollm2_gguf).path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A real byte-level BPE tokenizer (~640 tokens) with a ChatML template and <|im_start|>/<|im_end|>."""
    return _train_tokenizer(tmp_path_factory.mktemp("tiny-tokenizer"))


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory, tiny_tokenizer_dir):
    """`make_tiny_model(arch, tmp=None, **config_overrides) -> Path`: more tiny models (mistral, qwen3, phi3, gemma2)."""
    def make(arch: str, tmp: Path | None = None, **overrides) -> Path:
        dest = Path(tmp) if tmp is not None else tmp_path_factory.mktemp(f"tiny-{arch}")
        return build_tiny_model(arch, dest, tiny_tokenizer_dir, **overrides)
    return make


@pytest.fixture(scope="session")
def tiny_llama(make_tiny_model) -> Path:
    """Tiny random llama (2 layers, hidden 64, 4 heads, 2 kv heads), HF layout with the tiny tokenizer."""
    return make_tiny_model("llama")


@pytest.fixture(scope="session")
def tiny_qwen2(make_tiny_model) -> Path:
    """Tiny random qwen2 (tied embeddings, q/k/v biases), HF layout with the tiny tokenizer."""
    return make_tiny_model("qwen2")


@pytest.fixture
def live_contexts(monkeypatch):
    """`live_contexts()`: how many llama.cpp contexts mlxlab's batched engine made and has not freed yet.

    The real `llama_init_from_model` and `llama_free` run; they are only counted (llama-cpp-python's own `Llama`
    calls them through its private module, so its context is not counted).
    """
    import llama_cpp

    live: set[int] = set()
    init, free = llama_cpp.llama_init_from_model, llama_cpp.llama_free

    def counted_init(model, params):
        ctx = init(model, params)
        if ctx:
            live.add(int(ctx))
        return ctx

    def counted_free(ctx):
        live.discard(int(ctx))
        free(ctx)

    monkeypatch.setattr(llama_cpp, "llama_init_from_model", counted_init)
    monkeypatch.setattr(llama_cpp, "llama_free", counted_free)
    return lambda: len(live)


def _chromium() -> tuple[str, str] | None:
    """(browser, driver) paths of a Chromium and its chromedriver on this machine, or None."""
    browser = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p),
                   None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser():
    """Headless Chromium driven by selenium, with the page's console kept (`browser.get_log("browser")`).

    Debian's chromium and chromium-driver (installed by .ci/run, which sets MLXLAB_REQUIRE_BROWSER=1 so a missing
    browser fails there); the driver is named, so selenium never downloads one. Elsewhere a missing browser skips.
    """
    found = _chromium()
    if found is None:
        if os.environ.get("MLXLAB_REQUIRE_BROWSER"):
            pytest.fail("no chromium + chromedriver: apt-get install chromium chromium-driver")
        pytest.skip("no chromium + chromedriver on this machine (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def small_eval(tmp_path) -> Path:
    """An evaluation folder as `evaluate` writes it (results.jsonl, prompts.json, summary.json), without a model:
    2 models x 2 prompts x 2 samples; prompt 'ports' has a reference answer, 'hello' has none. Every answer's text
    differs, and each row carries a 'quality' (0-5) that a test can grade by."""
    out = tmp_path / "eval"
    out.mkdir()
    prompts = {"ports": {"messages": [{"role": "user", "content": "What is an output port?"}],
                         "reference": "An output port tells a Jolie service how to call another one.", "source": "x"},
               "hello": {"messages": [{"role": "user", "content": "Write hello world in Jolie."}],
                         "reference": None, "source": "x"}}
    texts = {"ports": ["An output port says where another service is (its location) and how to talk to it "
                       "(its protocol and interfaces).", "It is a port for output.",
                       "A port that a service uses to call operations of another service.", "Ports ports ports."],
             "hello": ['service Hello { main { println@Console("Hello, world!")() } }', "print hello world",
                       'include "console.iol"\nmain { println@Console("Hello")() }', ""]}
    rows = []
    for m, model in enumerate(("base", "iter 10")):
        for prompt in prompts:
            for sample in range(2):
                quality = (m * 3 + sample + len(prompt)) % 6
                rows.append({"id": f"{model[:4].strip()}-{prompt}-{sample}", "model": model, "iteration": m * 10,
                             "prompt": prompt, "sample": sample, "seed": sample, "tokens": 5, "finish_reason": "stop",
                             "answer": texts[prompt][m * 2 + sample], "quality": quality, "rouge_l": 0.4})
    (out / "prompts.json").write_text(json.dumps(prompts, indent=2))
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    losses = {"base": {"heldout_loss": 2.5, "perplexity": 12.2, "heldout_tokens": 40}}
    (out / "summary.json").write_text(json.dumps({"losses": losses}))
    return out
