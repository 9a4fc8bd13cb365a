"""The batched llama.cpp teacher: the same greedy text as one at a time (tiny GGUFs and SmolLM2), the shared
prefix evaluated once, per-sequence stop strings, likelihood scoring, `auto`, and a failure mid-batch that
leaves the SDG journal resumable."""

from __future__ import annotations

import json
import os
import sys

import pytest

from mlxlab.errors import MlxlabError, UsageError
from mlxlab.teacher.llama_batch import teacher_gguf
from mlxlab.teacher.teacher import Teacher, choose_backend, make_teacher

PATTERN = ("Q: What colour is the sky?\nA: Blue.\n\nQ: What colour is grass?\nA: Green.\n\n"
           "Q: What colour is snow?\nA:")
SYSTEM = {"role": "system", "content": "You are a helpful assistant. You answer in one short sentence. " * 4}


def _prompts(count: int) -> list[list[dict]]:
    return [[SYSTEM, {"role": "user", "content": f"Name a fruit whose name starts with letter {chr(65 + i)}."}]
            for i in range(count)]


@pytest.fixture(scope="module")
def tiny_ggufs(tiny_llama, tiny_qwen2, tmp_path_factory) -> list:
    """f32 GGUFs of the tiny random llama and qwen2 models (no chat template: raw-text completion)."""
    from mlxlab.gguf.gguf_export import export_gguf

    out = tmp_path_factory.mktemp("tiny-gguf")
    return [export_gguf(model, out / f"{model.name}.gguf", out_type="f32", verify=False).path
            for model in (tiny_llama, tiny_qwen2)]


@pytest.mark.slow
def test_tiny_ggufs_batched_equals_one_at_a_time_and_llama_cpp_python(tiny_ggufs):
    texts = ["the quick brown fox", "hello world, this is", "one two three four five", "a b c d e f g"]
    for path in tiny_ggufs:
        gguf, note = teacher_gguf(path)
        assert gguf == path and "as is" in note                # f32 has a fast batched kernel: no copy
        batched = Teacher(path, backend="llama-cpp", batch_size=4, n_ctx=256)
        single = Teacher(path, backend="llama-cpp", batch_size=1, n_ctx=256)
        many = batched.complete(texts, temperature=0.0, max_tokens=10)
        one = single.complete(texts, temperature=0.0, max_tokens=10)
        assert many == one and sum(c.tokens for c in many) >= 10
        # an independent implementation of the same model: llama-cpp-python's own one-at-a-time path
        reference = [batched.engine.llama.create_completion(t, max_tokens=10, temperature=0.0)["choices"][0]["text"]
                     for t in texts]
        assert [c.text for c in many] == reference
        assert batched.stats.decode_seconds > 0 and batched.stats.generated_tokens == sum(c.tokens for c in many)
        batched.close()
        single.close()


def test_q8_0_teacher_copy_follows_the_model_folder_not_its_name(make_tiny_model, tmp_path, monkeypatch):
    # `--teacher fused` in two projects: two models under one name
    for project, seed in (("a", 1), ("b", 2)):
        make_tiny_model("llama", tmp_path / project / "fused", seed=seed)
    copies = {}
    for project in ("a", "b"):
        monkeypatch.chdir(tmp_path / project)
        copies[project], note = teacher_gguf("fused")
        assert "Q8_0 copy of fused" in note
    assert copies["a"] != copies["b"] and copies["a"].read_bytes() != copies["b"].read_bytes()
    assert teacher_gguf("fused")[0] == copies["b"]                      # unchanged: the cached copy is reused
    # re-fused in place: the folder's files changed, so the copy is made again from the new weights
    make_tiny_model("llama", tmp_path / "b" / "fused", seed=3)
    again, _note = teacher_gguf("fused")
    assert again not in copies.values() and again.read_bytes() != copies["b"].read_bytes()


def test_model_identity_of_a_hugging_face_id_is_its_cached_snapshot(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from mlxlab.models import model_identity

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--owner--tiny"
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    first = model_identity("owner/tiny")
    (repo / "refs" / "main").write_text("b" * 40)                   # a new revision in the cache
    assert "a" * 40 in first and "b" * 40 in model_identity("owner/tiny")
    assert model_identity("owner/not-cached") == "owner/not-cached"     # offline, nothing to resolve: the id
    with pytest.raises(MlxlabError, match="no such file or directory"):    # a missing folder: a clear error
        teacher_gguf(str(tmp_path / "fused"))


def _logit_gap_where_they_part(teacher: Teacher, messages: list[dict], a: str, b: str) -> float:
    """|Δlogit| between the first tokens where greedy texts `a` and `b` of one prompt part, one sequence at a time.

    llama.cpp's CPU kernels round differently for different batch shapes (by CPU and build: a native build on a
    Sapphire Rapids machine parted at one of six prompts), so batched greedy can take the other side of a near tie;
    a batching bug (wrong positions, another sequence's cache) parts at tokens far apart. Measured here: 0.03
    at the pair CI parted at ("the letter" vs "letter"), 1.6 between " apple" and " banana".
    """
    rendered = teacher.engine.chat(messages=messages)
    prompt = teacher.engine.llama_tokens(rendered.prompt, special=True,
                                         add_bos=not getattr(rendered, "added_special", False))
    ta, tb = (teacher.engine.llama_tokens(t, special=False, add_bos=False) for t in (a, b))
    k = next(i for i, (x, y) in enumerate(zip(ta + [-1], tb + [-2])) if x != y)
    if min(len(ta), len(tb)) <= k:
        return float("inf")                 # one text is a prefix of the other: not a tie between two tokens
    import llama_cpp
    import numpy as np

    llama = teacher.engine.llama
    llama.reset()
    llama.eval(prompt + ta[:k])             # the last position's logits only (logits_all is off)
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, -1), shape=(llama.n_vocab(),))
    return abs(float(logits[ta[k]]) - float(logits[tb[k]]))


@pytest.fixture(scope="module")
def smollm2_teacher(smollm2_gguf):
    teacher = Teacher(smollm2_gguf, backend="llama-cpp", batch_size=8, n_ctx=1024)
    yield teacher
    teacher.close()


@pytest.mark.slow
def test_smollm2_is_served_from_a_cached_q8_0_copy(smollm2_teacher, smollm2_gguf, mlxlab_cache):
    # Q4_1 has no fast batched CPU kernel: the teacher runs a verified Q8_0 copy made once, in the cache
    assert "Q8_0 copy" in smollm2_teacher.gguf_note and str(mlxlab_cache) in smollm2_teacher.gguf_note
    path, _note = teacher_gguf(smollm2_gguf)
    assert path.is_file() and path.parent == mlxlab_cache / "teacher-gguf"
    assert path.with_name(path.stem + ".verify.json").is_file()
    assert teacher_gguf(smollm2_gguf, requantize=False)[0] == smollm2_gguf     # evaluation runs the file itself
    assert 130e6 < smollm2_teacher.num_parameters() < 140e6 and smollm2_teacher.can_score()


@pytest.mark.slow
def test_smollm2_batched_greedy_equals_one_at_a_time_and_prefix_is_evaluated_once(smollm2_teacher, smollm2_gguf):
    prompts = _prompts(6)
    teacher = smollm2_teacher
    teacher.stats.reset()
    before = teacher.engine.batch.counters.prefixes_evaluated
    batched = teacher.generate(prompts, temperature=0.0, max_tokens=12)
    # the shared system prompt was evaluated once and handed to all six sequences
    assert teacher.engine.batch.counters.prefixes_evaluated == before + 1
    assert teacher.stats.cached_prefix_tokens > 5 * len(SYSTEM["content"]) // 8
    assert teacher.stats.prefill_tokens < teacher.stats.prompt_tokens / 2
    single = Teacher(smollm2_gguf, backend="llama-cpp", batch_size=1, n_ctx=1024, prefix_cache=False)
    alone = single.generate(prompts, temperature=0.0, max_tokens=12)
    same = [a[0].text == b[0].text for a, b in zip(batched, alone)]
    assert sum(same) >= len(prompts) - 2, (batched, alone)
    for messages, a, b in zip(prompts, batched, alone):
        if a[0].text != b[0].text:          # a near tie that the batch's other rounding broke the other way
            assert _logit_gap_where_they_part(single, messages, a[0].text, b[0].text) < 0.5, (a, b)
    assert single.engine.batch.counters.prefixes_evaluated == 0
    # seeded sampling: the same seed gives the same texts again (every call starts from an empty cache)
    a = teacher.generate(prompts, temperature=0.8, max_tokens=12, seed=5)
    b = teacher.generate(prompts, temperature=0.8, max_tokens=12, seed=5)
    c = teacher.generate(prompts, temperature=0.8, max_tokens=12, seed=6)
    assert a == b and a != c
    single.close()


@pytest.mark.slow
def test_a_sequence_that_hits_its_stop_string_ends_while_others_continue(smollm2_teacher):
    teacher = smollm2_teacher
    other = "Once upon a time, in a small village by the sea, there lived"
    free = teacher.complete([PATTERN, other], temperature=0.0, max_tokens=16)
    text = free[0].text
    assert len(text) > 6, text
    stop = text[3:6]                                   # a string the first continuation certainly reaches
    assert stop not in free[1].text                    # and the second never does
    cut = teacher.complete([PATTERN, other], stop=(stop,), temperature=0.0, max_tokens=16)
    assert cut[0].text == text[:text.find(stop)] and cut[0].finish_reason == "stop" and cut[0].tokens < 16
    # the other runs on to its limit (alone in the batch from then on: its text may differ from the free run by
    # llama.cpp's batch-shape float effects, so only where it ended is compared)
    assert cut[1].finish_reason == "length" and cut[1].tokens == 16 and cut[1].text.startswith(" ")


@pytest.mark.slow
def test_likelihood_scoring_on_llama_cpp_agrees_with_mlx(smollm2_teacher, smollm2_dir):
    pairs = [("The capital of France is", " Paris."), ("The capital of France is", " a banana."),
             ("Q: What colour is the sky?\nA:", " Blue."), ("", "Hello there, how are you today?")]
    llama = smollm2_teacher.loglikelihood(pairs)
    assert llama[0][0] > llama[1][0] and [n for _s, n in llama] == [2, 3, 2, 7]
    mlx = Teacher(smollm2_dir, backend="mlx").loglikelihood(pairs)
    assert [n for _s, n in mlx] == [n for _s, n in llama]
    for (a, n), (b, _n) in zip(llama, mlx):            # Q8_0 vs float32 of the same 4-bit weights
        assert abs(a - b) / n < 0.15, (a, b)


def test_auto_picks_a_backend_and_says_why(monkeypatch):
    assert choose_backend("http://127.0.0.1:1")[0] == "openai"
    import mlxlab.device

    monkeypatch.setattr(mlxlab.device, "current_device", lambda: "gpu")
    backend, why = choose_backend()
    assert backend == "mlx" and "gpu" in why
    monkeypatch.setattr(mlxlab.device, "current_device", lambda: "cpu")
    assert choose_backend()[0] == "llama-cpp"              # llama-cpp-python is a dependency
    with pytest.raises(UsageError, match="teacher-url"):               # the CLI exits 2 on it
        make_teacher("smollm2", url="http://127.0.0.1:1", backend="mlx")


@pytest.mark.slow
def test_auto_in_sdg_is_reported_and_a_failure_mid_batch_resumes(smollm2_gguf, tmp_path, monkeypatch):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_sdg import make_taxonomy

    import mlxlab.device
    from mlxlab.teacher.llama_batch import LlamaBatch
    from mlxlab.sdg.sdg import generate_data

    monkeypatch.setattr(mlxlab.device, "current_device", lambda: "cpu")
    tax = make_taxonomy(tmp_path / "taxonomy")
    settings = dict(samples_per_seed=2, max_tokens=24, batch_size=2, quiet=True, allow_empty=True)
    real = LlamaBatch._decode
    calls = {"n": 0}

    def failing(self, entries, *, prefill):
        calls["n"] += 1
        if calls["n"] > 40:                              # after the first groups are in the journal
            raise MlxlabError("llama.cpp llama_decode failed with code -1 (injected)")
        return real(self, entries, prefill=prefill)

    monkeypatch.setattr(LlamaBatch, "_decode", failing)
    with pytest.raises(MlxlabError, match="injected"):
        generate_data(tax, output=tmp_path / "data", **settings)
    journal = tmp_path / "data" / ".journal" / "compositional_skills__writing__haiku.jsonl"
    done = len(journal.read_text().splitlines()) - 1
    assert done >= 2 and not (tmp_path / "data" / "report.json").exists()
    monkeypatch.setattr(LlamaBatch, "_decode", real)
    result = generate_data(tax, output=tmp_path / "data", **settings)
    report = json.loads(result.report.read_text())
    assert report["backend"] == "llama-cpp" and "auto" in report["backend_reason"]
    assert report["methods"]["scorer"] == "likelihood"        # scoring works on this backend
    units = [json.loads(line)["unit"] for line in journal.read_text().splitlines()[1:]]
    assert len(units) == len(set(units)) and len(units) > done  # resumed: nothing done twice


# ---------------------------------------------------------------------------------------------- freeing contexts

def test_a_context_is_freed_by_close_once_and_by_the_finaliser(tiny_ggufs, live_contexts):
    import gc

    from mlxlab.teacher.llama_batch import LlamaBatch

    teacher = Teacher(tiny_ggufs[0], backend="llama-cpp", batch_size=2, n_ctx=256)
    assert live_contexts() == 1
    teacher.close()
    teacher.close()                                        # twice: nothing freed twice
    assert live_contexts() == 0
    with pytest.raises(MlxlabError, match="closed"):
        teacher.complete(["hello"], max_tokens=2)
    from mlxlab.llamacpp import load_llama

    llama = load_llama(tiny_ggufs[0], n_ctx=64, verbose=False)
    engine = LlamaBatch(llama, slots=2, n_ctx=64, threads=1)
    del llama                                              # the engine keeps the model alive until its context goes
    assert live_contexts() == 1
    del engine                                             # dropped without close: the finaliser frees it
    gc.collect()
    assert live_contexts() == 0


def test_sdg_closes_the_teacher_it_made_also_on_errors(tiny_ggufs, tmp_path, monkeypatch, live_contexts):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_sdg import make_taxonomy

    import mlxlab.sdg.sdg
    from mlxlab.pipeline import run
    from mlxlab.sdg.sdg import generate_data

    def failing(*args, **kwargs):
        raise MlxlabError("injected after the teacher was loaded")

    monkeypatch.setattr(mlxlab.sdg.sdg, "_run_leaf", failing)
    tax = make_taxonomy(tmp_path / "taxonomy")
    with pytest.raises(MlxlabError, match="injected") as info:
        generate_data(tax, teacher=str(tiny_ggufs[0]), teacher_backend="llama-cpp", batch_size=2,
                      output=tmp_path / "data", quiet=True)
    # freed at once, not when the traceback (which holds the teacher) is collected
    assert info.value and live_contexts() == 0
    mine = Teacher(tiny_ggufs[0], backend="llama-cpp", batch_size=2, n_ctx=256)
    with pytest.raises(MlxlabError, match="injected"):
        generate_data(tax, teacher=mine, output=tmp_path / "data", quiet=True)
    assert live_contexts() == 1 and mine.complete(["hello"], max_tokens=2, temperature=0.0)   # the caller's: open
    mine.close()
    # the generate stage of a run makes the teacher and hands it to generate_data: the stage closes it
    with pytest.raises(MlxlabError, match="injected") as info:
        run("r", runs_dir=tmp_path / "runs", taxonomy=tax, teacher=str(tiny_ggufs[0]), stages=["generate"],
            generate={"teacher_backend": "llama-cpp", "batch_size": 2}, quiet=True)
    assert info.value and live_contexts() == 0


def test_evaluate_closes_the_answerers_it_made_never_the_callers(tiny_ggufs, tmp_path, monkeypatch, live_contexts):
    import mlxlab.evaluate.evaluation
    from mlxlab.evaluate.evaluation import evaluate

    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("name: tiny\nprompts:\n  - id: a\n    prompt: What is a port?\n    reference: A port.\n")
    mine = Teacher(tiny_ggufs[1], backend="llama-cpp", batch_size=2, n_ctx=256)
    seen = []
    answer = Teacher.generate

    def counting(self, *args, **kwargs):
        seen.append(live_contexts())
        return answer(self, *args, **kwargs)

    monkeypatch.setattr(Teacher, "generate", counting)
    result = evaluate({"gguf": str(tiny_ggufs[0]), "mine": mine}, prompts, output=tmp_path / "eval", k=1,
                      max_tokens=4, quiet=True)
    assert len(result.summary["models"]) == 2
    # the GGUF's answerer went before the next one answered; the caller's teacher is still open
    assert seen == [2, 1] and live_contexts() == 1
    assert mine.complete(["hello"], max_tokens=2, temperature=0.0)

    def failing(*args, **kwargs):
        raise RuntimeError("injected while answering")

    monkeypatch.setattr(mlxlab.evaluate.evaluation, "rouge_l", failing)
    with pytest.raises(RuntimeError, match="injected") as info:
        evaluate({"gguf": str(tiny_ggufs[0])}, prompts, output=tmp_path / "eval2", k=1, max_tokens=4, quiet=True)
    assert info.value and live_contexts() == 1          # the answerer it made is freed; `mine` is still open
    mine.close()
