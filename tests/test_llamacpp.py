"""llama.cpp on the machine it lands on: a real completion with the installed build (in a child, so a crash fails
the test instead of killing pytest), the self-test's choice with an injected crash, its cache and its
invalidation, and the supervisor's one clear line when a command dies in native code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mlxlab.llamacpp as llamacpp
from mlxlab.errors import MlxlabError

# Crashes in native code for real (a read of address 0), in the child that runs a candidate setting.
CRASH_DEFAULT = "import ctypes, json, sys\nif not json.loads(sys.argv[1])['settings']:\n    ctypes.string_at(0)\n"
CRASH_ALWAYS = "import ctypes\nctypes.string_at(0)\n"


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache folder of the test's own: verdicts written here leave the session's alone."""
    monkeypatch.setenv("MLXLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_installed_build_completes_with_the_embedded_model_in_a_child():
    script = textwrap.dedent("""
        from mlxlab.llamacpp import load_llama, verdict
        from mlxlab.models import embedded_gguf
        llm = load_llama(embedded_gguf(), n_ctx=512, verbose=False)
        out = llm.create_completion("The capital of France is", max_tokens=8, temperature=0.0)
        print(verdict().name, "|", out["choices"][0]["text"])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"llama.cpp ended with {proc.returncode}: {proc.stderr[-2000:]}"
    name, _, text = proc.stdout.strip().partition("|")
    assert name.strip() in dict(llamacpp.CANDIDATES) and "Paris" in text


def test_self_test_on_this_machine_says_what_it_measured():
    found = llamacpp.verdict()
    assert found.usable, found.reason
    assert {run["name"] for run in found.tried} == {name for name, _ in llamacpp.CANDIDATES}
    assert found.build["version"] and found.build["features"], found.build     # llama_print_system_info parsed
    plain = next(r for r in found.tried if r["name"] == llamacpp.REFERENCE)
    assert plain["ok"] and plain["prefill_tok_s"] > 0
    assert "passed" in found.describe() and found.name in found.describe()


def test_a_setting_that_crashes_is_passed_over_for_the_next(own_cache):
    found = llamacpp.self_test(script=CRASH_DEFAULT + llamacpp.CHILD_SCRIPT)
    assert found.usable and found.name == "plain" and found.settings == {"use_extra_bufts": False}
    default = next(r for r in found.tried if r["name"] == "default")
    assert not default["ok"] and default["outcome"] == "crashed (SIGSEGV)"
    assert "'default' crashed (SIGSEGV)" in found.reason


def test_when_every_setting_crashes_llama_cpp_is_not_used_and_auto_says_why(own_cache, monkeypatch):
    found = llamacpp.self_test(script=CRASH_ALWAYS)
    assert not found.usable and "every setting failed its self-test" in found.reason
    llamacpp._write_cache(llamacpp.build_key(), found)
    from mlxlab.teacher.teacher import choose_backend

    monkeypatch.setenv("MLXLAB_DEVICE", "cpu")
    backend, why = choose_backend()
    assert backend == "mlx" and "llama.cpp cannot run here" in why and "SIGSEGV" in why
    with pytest.raises(MlxlabError, match="needs llama.cpp, which cannot run here") as caught:
        llamacpp.load_llama("any.gguf", purpose="the llama.cpp teacher")
    assert "GGML_NATIVE=OFF" in caught.value.hint and "mlxlab info" in caught.value.hint


def test_the_verdict_is_cached_per_build_and_taken_again_when_the_build_changes(own_cache, tmp_path, monkeypatch):
    package = tmp_path / "llama_cpp"
    (package / "lib").mkdir(parents=True)
    library = package / "lib" / "libllama.so"
    library.write_bytes(b"one build")
    monkeypatch.setattr(llamacpp, "_package_dir", lambda: package)
    calls = []

    def measure(**_):
        calls.append(1)
        return llamacpp.Verdict(True, "plain", {"use_extra_bufts": False}, "measured", [], {"version": "x"})

    monkeypatch.setattr(llamacpp, "self_test", measure)
    first, second = llamacpp.verdict(), llamacpp.verdict()
    assert len(calls) == 1 and not first.cached and second.cached and second.name == "plain"
    library.write_bytes(b"another build, another size")              # pip rebuilt llama.cpp
    assert not llamacpp.verdict().cached and len(calls) == 2
    assert llamacpp.verdict(refresh=True) and len(calls) == 3


def test_a_crash_later_moves_every_next_run_to_the_next_setting(own_cache):
    tried = [{"name": "default", "ok": True, "outcome": "ran"}, {"name": "plain", "ok": True, "outcome": "ran"}]
    llamacpp._write_cache(llamacpp.build_key(), llamacpp.Verdict(True, "default", {}, "fastest", tried, {}))
    assert "'plain' settings" in llamacpp.record_crash("run: generate", "SIGSEGV")
    now = llamacpp.verdict()
    assert now.usable and now.name == "plain" and "crashed in run: generate" in now.reason
    assert "no longer uses llama.cpp" in llamacpp.record_crash("run: generate", "SIGSEGV")
    assert not llamacpp.verdict().usable


def test_settings_reach_every_llama_made_in_the_process(smollm2_gguf):
    import llama_cpp

    llamacpp.apply_settings({"use_extra_bufts": False})
    try:
        assert llama_cpp.llama_model_default_params().use_extra_bufts is False
        assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is False
    finally:
        llamacpp.apply_settings({})
    assert llama_cpp.llama_model_default_params().use_extra_bufts is True


def test_features_and_native_builds_are_read_from_system_info():
    info = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | AVX512 = 1 | AMX_INT8 = 1 | " \
           "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
    features = llamacpp.parse_features(info)
    assert features["AVX512"] and features["AMX_INT8"] and features["REPACK"]
    portable = llamacpp.parse_features("CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 |")
    if llamacpp.platform.machine() in ("x86_64", "AMD64"):
        assert llamacpp._is_native(features) is True and llamacpp._is_native(portable) is False
    assert "AMX_INT8" in llamacpp.describe_build({"version": "0.3.36", "native": True, "features": features})


# ------------------------------------------------------------------------------------- the supervisor

SITE = """\
import os
if os.environ.get("MLXLAB_SUPERVISED") and os.environ.get("CRASH_WHEN_JOURNAL"):
    import pathlib
    import llama_cpp
    real = llama_cpp.llama_decode
    def decode(ctx, batch):
        # a real crash inside llama.cpp (a null context) once the journal holds a finished group
        if any(p.stat().st_size > 300 for p in pathlib.Path(os.environ["CRASH_WHEN_JOURNAL"]).rglob("*.jsonl")):
            return real(None, batch)
        return real(ctx, batch)
    llama_cpp.llama_decode = decode
"""


def test_a_native_crash_in_a_command_is_one_clear_line(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(     # the command's handler reads address 0
        "import os, ctypes\nif os.environ.get('MLXLAB_SUPERVISED'):\n    import mlxlab.commands\n"
        "    mlxlab.commands.cmd_taxonomy_validate = lambda args: ctypes.string_at(0)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "mlxlab", "taxonomy", "validate", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + 11
    lines = [x for x in proc.stderr.splitlines() if x.startswith("mlxlab:")]
    assert len(lines) == 1, proc.stderr
    assert "taxonomy validate crashed in native code" in lines[0] and "SIGSEGV (segmentation fault)" in lines[0]
    saved = Path(lines[0].rsplit("the stacks are in ", 1)[1])
    assert "Segmentation fault" in saved.read_text()


def test_help_runs_unsupervised_and_usage_errors_keep_their_code():
    proc = subprocess.run([sys.executable, "-m", "mlxlab", "train", "--no-such-flag"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr
    from mlxlab.cli import _verb

    assert _verb(["--help"]) is None and _verb([]) is None
    assert _verb(["--config", "x.yaml", "eval", "run", "a"]) == "eval run" and _verb(["run", "tiny"]) == "run"


@pytest.mark.slow
def test_run_crashing_in_generate_says_so_and_the_rerun_resumes_from_the_journal(tiny_llama, smollm2_dir,
                                                                                    tmp_path, mlxlab_cache):
    from test_pipeline import CONFIG, SKILL, _cli, make_taxonomy

    make_taxonomy(tmp_path / "taxonomy")          # and a second leaf: the crash comes when the first is journaled
    second = tmp_path / "taxonomy" / "compositional_skills" / "programming" / "jolie_more"
    second.mkdir(parents=True)
    (second / "qna.yaml").write_text(SKILL.replace("in one sentence", "in one short sentence"))
    (tmp_path / "mlxlab.yaml").write_text(CONFIG)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    journals = tmp_path / "runs" / "tiny" / "data"
    cache = mlxlab_cache / llamacpp.CACHE_NAME
    saved = cache.read_bytes() if cache.is_file() else None       # the crash changes the verdict: put it back
    env = {**os.environ, "CRASH_WHEN_JOURNAL": str(journals),
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    try:
        crashed = subprocess.run(_cli(tmp_path, tiny_llama, "--stages", "validate,generate"), env=env,
                                 capture_output=True, text=True, timeout=900)
        assert crashed.returncode == 128 + 11, crashed.stderr[-3000:]
        errors = [x for x in crashed.stderr.splitlines() if x.startswith("mlxlab:")]
        assert len(errors) == 1, crashed.stderr[-3000:]
        assert "run: generate crashed in native code: llama.cpp died with SIGSEGV" in errors[0]
        assert "run the same command again to resume" in errors[0] and "GGML_NATIVE=OFF" in errors[0]
        assert "now runs llama.cpp with its" in errors[0] or "no longer uses llama.cpp" in errors[0]
        journal = max((p for p in journals.rglob("*.jsonl") if ".journal" in str(p)), key=lambda p: p.stat().st_size)
        before = journal.read_text()
        assert len(before.splitlines()) > 1                                # a finished group was kept
        if saved is not None:             # the crash was injected, not the settings' fault: the same teacher again
            cache.write_bytes(saved)

        again = subprocess.run(_cli(tmp_path, tiny_llama, "--stages", "validate,generate"), capture_output=True,
                               text=True, timeout=900)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "generate: running (resuming an interrupted run)" in again.stderr
        assert "llama-cpp" in json.loads((journals / "report.json").read_text())["backend"]
        assert journal.read_text().startswith(before) and not list(journals.rglob("*.stale"))
    finally:
        if saved is not None:
            cache.write_bytes(saved)
