"""The teacher: MLX batching and prefix cache with the embedded SmolLM2, the openai backend against a real
llama.cpp server on 127.0.0.1 (and a fleet of servers: two real ones, dead ports, a small stub server), the
llama-cpp backend in-process, and the unreachable-endpoint error."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from mlxlab.errors import MlxlabError
from mlxlab.teacher.completions import Completion, completion_seed, plan_prefixes, shared_prefix_length
from mlxlab.teacher.teacher import Teacher, make_teacher

SYSTEM = {"role": "system", "content": "You are a friendly teacher. You write one short question about the "
                                       "topic the user names, and nothing else. " * 3}


def _prompts(count: int) -> list[list[dict]]:
    return [[SYSTEM, {"role": "user", "content": f"Topic: the number {i}"}] for i in range(count)]


def test_helpers():
    from mlxlab.teacher.completions import cut_at_stop, until_stop

    assert cut_at_stop("a\nQ: b\nText: c", ("\nText:", "\nQ:")) == "a" and cut_at_stop("abc", ("\nQ:",)) is None
    assert until_stop("\nQ: next", ("\nQ:",)) == "" and until_stop("whole", ("\nQ:",)) == "whole"
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([]) == 0
    system, seed_a, seed_b = list(range(20)), list(range(100, 140)), list(range(200, 240))
    prompts = [system + seed_a + [1, 2], system + seed_a + [3], system + seed_b + [4, 5], system + seed_b + [6],
               [7] * 30]
    # the two prompts of each seed share system + seed example; the odd one out shares nothing
    assert plan_prefixes(prompts) == [60, 60, 60, 60, 0]
    assert plan_prefixes([system + [1], system + [2]]) == [20, 20]
    assert plan_prefixes([system, system]) == [19, 19]                   # one token of its own each
    assert plan_prefixes([[1] * 10, [1] * 10 + [2]]) == [0, 0]          # too short to be worth it
    a = completion_seed(0, _prompts(1)[0])
    assert a == completion_seed(0, _prompts(1)[0]) != completion_seed(0, _prompts(1)[0], 1)
    assert a != completion_seed(1, _prompts(1)[0])
    with pytest.raises(MlxlabError, match="backend"):
        Teacher(backend="vllm-magic")
    with pytest.raises(MlxlabError, match="URL"):
        Teacher(backend="openai")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_fails_clearly_after_retries():
    teacher = make_teacher("any", url=f"http://127.0.0.1:{_free_port()}", retries=2, backoff_s=0.05, timeout_s=2)
    start = time.perf_counter()
    with pytest.raises(MlxlabError) as info:
        teacher.generate(_prompts(2), max_tokens=4)
    message = str(info.value)
    assert "after 3 attempts" in message and "/v1/chat/completions" in message and "hint:" in message
    assert time.perf_counter() - start >= 0.05 + 0.1          # it backed off between attempts


class _StubHandler(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible stub: answers `seed N` (the request's seed) after a short delay, or its status."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(0.02)        # long enough that every server's workers get requests
        if self.server.status != 200:
            data = b'{"error": "stub says no"}'
            self.send_response(self.server.status)
        else:
            text = f"seed {body['seed']}"
            data = json.dumps({"choices": [{"message": {"content": text}, "text": text, "finish_reason": "stop"}],
                               "usage": {"completion_tokens": 2, "prompt_tokens": 5}}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _stub(status: int = 200):
    """A stub server on a free 127.0.0.1 port answering every POST with `status`: yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
    server.status = status
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _texts(out) -> list[str]:
    return [c.text for cs in out for c in cs]


FAST = dict(retries=1, backoff_s=0.01, timeout_s=5)


def test_teacher_urls_parse_and_refuse_duplicates():
    from mlxlab.teacher.openai_client import server_urls

    assert server_urls("http://a:1, ,http://b:2/v1,") == ["http://a:1", "http://b:2/v1"]
    assert server_urls(["http://a:1", "", "http://b:2"]) == ["http://a:1", "http://b:2"] and server_urls(None) == []
    with pytest.raises(MlxlabError, match="one server twice: http://a:1 and http://a:1/v1/"):
        server_urls("http://a:1,http://b:2,http://a:1/v1/")
    with pytest.raises(MlxlabError, match="http:// or https://"):
        server_urls("a:8080")
    with pytest.raises(MlxlabError, match="needs a URL"):
        make_teacher("m", url=" , ")
    teacher = make_teacher("m", url=["http://a:1/", "http://b:2"])
    assert teacher.backend == "openai" and teacher.url == "http://a:1/,http://b:2"
    assert teacher.servers == [{"url": "http://a:1/", "answered": 0, "down": False},
                               {"url": "http://b:2", "answered": 0, "down": False}]


def test_an_engine_refuses_what_it_cannot_do_clearly():
    from mlxlab.teacher.completions import Engine, GenerationStats
    from mlxlab.teacher.openai_client import OpenAIEngine

    bare = Engine(GenerationStats(), batch_size=2, prefix_cache=True, concurrency=1)
    with pytest.raises(MlxlabError, match="needs an in-process teacher"):
        bare.score([([1, 2], 1)], 8, None)
    assert (bare.choose([[SYSTEM]], ["YES", "NO"], "", None), bare.num_parameters(), bare.servers()) == (None,) * 3
    assert bare.count_tokens("eight ch") == 2 and not bare.can_score()
    remote = OpenAIEngine(["http://a:1"], "m", GenerationStats(), retries=0, backoff_s=0.0, timeout_s=1.0,
                          api_key_env="UNSET", batch_size=4, prefix_cache=True, concurrency=2)
    assert not remote.can_score() and remote.servers() == [{"url": "http://a:1", "answered": 0, "down": False}]
    # through the Teacher front, the same refusals: one engine chosen once, no backend test per method
    teacher = make_teacher("m", url="http://a:1")
    assert teacher.engine.backend == "openai" and teacher.choose([[SYSTEM]], ["YES", "NO"]) is None
    with pytest.raises(MlxlabError, match="not openai") as info:
        teacher.loglikelihood([("Q:", " A")])
    assert "--scorer judge" in info.value.hint
    teacher.batch_size = 7
    assert teacher.engine.batch_size == 7 and teacher.concurrency == 4


def test_mlx_engine_generates_scores_and_closes(tiny_llama):
    from mlxlab.teacher.completions import GenerationStats
    from mlxlab.teacher.mlx_batch import MlxEngine

    engine = MlxEngine(tiny_llama, GenerationStats(), batch_size=2, prefix_cache=True, concurrency=1)
    out = engine.complete(["one two", "three"], [1, 2], (), 0.0, 1.0, 4, None)
    assert len(out) == 2 and all(isinstance(c, Completion) and 0 < c.tokens <= 4 for c in out)
    assert engine.can_score() and engine.num_parameters() > 0
    (total, count), = engine.score([(engine.tokens("one two three"), 1)], 8, None)
    assert total < 0 and count == len(engine.tokens("one two three")) - 1
    engine.close()
    assert not engine.can_score() and engine.num_parameters() is None
    with pytest.raises(MlxlabError, match="closed"):
        engine.complete(["one"], [1], (), 0.0, 1.0, 4, None)


def test_fleet_spreads_keeps_order_and_drops_a_failing_server():
    prompts = _prompts(8)
    with _stub() as a, _stub() as b, _stub(503) as failing:
        alone = make_teacher("m", url=a, concurrency=2, **FAST)
        reference = alone.generate(prompts, temperature=0.7, max_tokens=4, seed=2)
        assert _texts(reference) == [f"seed {completion_seed(2, p)}" for p in prompts]
        fleet = make_teacher("m", url=f"{a},{b}", concurrency=2, **FAST)
        assert _texts(fleet.generate(prompts, temperature=0.7, max_tokens=4, seed=2)) == _texts(reference)
        assert [s["answered"] for s in fleet.servers] != [8, 0] and sum(s["answered"] for s in fleet.servers) == 8
        # a server answering 503 after its retries is marked down; its requests go to the other one
        fleet = make_teacher("m", url=[failing, b], concurrency=2, **FAST)
        assert _texts(fleet.generate(prompts, temperature=0.7, max_tokens=4, seed=2)) == _texts(reference)
        down, up = fleet.servers
        assert down["down"] and "HTTP 503" in down["error"] and down["answered"] == 0
        assert up == {"url": b, "answered": 8, "down": False}
        completions = fleet.complete(["x", "y"], seeds=[1, 2], max_tokens=4)     # /v1/completions too
        assert [c.text for c in completions] == [f"seed {completion_seed(s, [{'text': t}])}"
                                                 for s, t in ((1, "x"), (2, "y"))]
        assert fleet.stats.generated_tokens == 2 * 10 and fleet.servers[1]["answered"] == 10


def test_fleet_refusal_is_an_error_at_once():
    with _stub(400) as refusing, _stub() as ok:
        fleet = make_teacher("m", url=[ok, refusing], concurrency=1, retries=3, backoff_s=5)
        start = time.perf_counter()
        with pytest.raises(MlxlabError, match="refused the request: HTTP 400") as info:
            fleet.generate(_prompts(4), max_tokens=4)
        assert time.perf_counter() - start < 4 and "down" not in str(info.value)   # no backoff, not a failover
        assert not any(s["down"] for s in fleet.servers)


def test_fleet_all_dead_names_every_url():
    dead = [f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}/v1"]
    teacher = make_teacher("m", url=",".join(dead), concurrency=2, **FAST)
    with pytest.raises(MlxlabError) as info:
        teacher.generate(_prompts(3), max_tokens=4)
    message = str(info.value)
    assert message.startswith("all 2 teacher servers are down") and all(u in message for u in dead)
    assert "after 2 attempts" in message and "hint:" in message
    assert [s["down"] for s in teacher.servers] == [True, True]
    with pytest.raises(MlxlabError, match="all 2 teacher servers are down"):  # a later call tries them again
        teacher.complete(["x"], max_tokens=4)


def test_a_down_server_stays_down_while_another_is_up():
    dead = f"http://127.0.0.1:{_free_port()}"
    with _stub() as up:
        fleet = make_teacher("m", url=[dead, up], concurrency=1, retries=1, backoff_s=0.3)
        fleet.generate(_prompts(2), max_tokens=4)
        assert [s["down"] for s in fleet.servers] == [True, False]
        start = time.perf_counter()
        assert len(fleet.generate(_prompts(3), max_tokens=4)) == 3
        assert time.perf_counter() - start < 0.3                      # no new retries of the dead one
        assert [s["answered"] for s in fleet.servers] == [0, 5]


def test_cli_with_every_teacher_url_dead_exits_1_without_traceback(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_sdg import make_taxonomy

    tax = make_taxonomy(tmp_path / "taxonomy")
    dead = [f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"]
    out = subprocess.run([sys.executable, "-m", "mlxlab", "generate", "--taxonomy", str(tax), "--teacher-url",
                          ",".join(dead), "--output", str(tmp_path / "data"), "--quiet"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert out.returncode == 1, out.stderr
    assert "all 2 teacher servers are down" in out.stderr and all(u in out.stderr for u in dead)
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_mlx_batched_equals_one_at_a_time_and_prefix_cache(smollm2_dir):
    teacher = Teacher(smollm2_dir, batch_size=4)
    prompts = _prompts(4)
    batched = teacher.generate(prompts, temperature=0.8, max_tokens=12, seed=5)
    assert teacher.stats.cached_prefix_tokens > 0 and len(teacher.stats.first_token_seconds) == 1
    assert all(len(c) == 1 and isinstance(c[0], Completion) and c[0].tokens > 0 for c in batched)
    teacher.batch_size, teacher.prefix_cache = 1, False
    single = teacher.generate(prompts[2:], temperature=0.8, max_tokens=12, seed=5)
    # per-completion PRNG keys: a completion does not depend on its batch, its position or the prefix cache
    assert [c[0].text for c in single] == [c[0].text for c in batched[2:]]
    again = teacher.generate(prompts[:1], n=2, temperature=0.8, max_tokens=12, seed=5)
    assert again[0][0].text == batched[0][0].text and again[0][0].finish_reason in ("stop", "length")
    greedy = teacher.generate(prompts[:1], temperature=0.0, max_tokens=6, seed=1)
    assert greedy == teacher.generate(prompts[:1], temperature=0.0, max_tokens=6, seed=2)
    assert teacher.count_tokens("hello world") >= 2
    # two prefix groups of different lengths in one batch (left-padded caches): still the same texts
    other = {"role": "system", "content": "Answer like a pirate, always, in one short sentence. " * 2}
    mixed = _prompts(2) + [[other, {"role": "user", "content": f"Say hello number {i}"}] for i in range(2)]
    teacher.batch_size, teacher.prefix_cache = 4, True
    grouped = teacher.generate(mixed, temperature=0.8, max_tokens=8, seed=5)
    assert teacher.stats.cached_prefix_tokens > 0
    teacher.batch_size, teacher.prefix_cache = 1, False
    assert [c[0].text for c in teacher.generate(mixed[1:], temperature=0.8, max_tokens=8, seed=5)] == \
        [c[0].text for c in grouped[1:]]
    # constrained verdicts: always one of the choices, one forward pass each
    teacher.batch_size, teacher.prefix_cache = 4, True
    picked = teacher.choose(prompts, ["0", "1"], prefix="[Start of Score]\n")
    assert len(picked) == 4 and set(picked) <= {"0", "1"}
    assert teacher.choose(prompts[:2], ["YES", "NO"], prefix="[Start of Verdict]\n") != [None, None]
    assert teacher.choose(prompts[:1], ["1", "10"]) is None              # same first token: cannot tell apart


PATTERN = ("Questions and answers about geography.\n\nQ: What is the capital of France?\nA: Paris.\n\n"
           "Q: What is the longest river in Africa?\nA: The Nile.\n\nQ:")


def test_mlx_raw_continuation_stops_and_likelihood(smollm2_dir):
    teacher = Teacher(smollm2_dir, batch_size=3, prefix_cache=False)
    assert 120e6 < teacher.num_parameters() < 150e6 and teacher.can_score()
    texts = [PATTERN, PATTERN.replace("geography", "rivers"), "Count: one, two, three,"]
    out = teacher.complete(texts, stop=("\nQ:", "\n\n"), temperature=0.0, max_tokens=40)
    assert all("\nQ:" not in c.text and "\n\n" not in c.text for c in out)
    assert any(c.finish_reason == "stop" and c.tokens < 40 for c in out)
    # a sequence that stops leaves the batch; the others decode on exactly as if alone
    alone = [teacher.complete([t], stop=("\nQ:", "\n\n"), temperature=0.0, max_tokens=40)[0] for t in texts]
    assert [c.text for c in alone] == [c.text for c in out]
    sampled = teacher.complete(texts[:2], stop=("\nQ:",), temperature=0.8, max_tokens=24, seeds=[1, 2])
    assert sampled == teacher.complete(texts[:2], stop=("\nQ:",), temperature=0.8, max_tokens=24, seeds=[1, 2])
    # log p(answer | question) beats log p(answer) for a fitting answer, and loses for a misfit
    (fit, n), (alone_fit, m), (misfit, _), (alone_misfit, _) = teacher.loglikelihood([
        ("Q: What is the capital of Italy?\nA:", " Rome."), ("A:", " Rome."),
        ("Q: What is the capital of Italy?\nA:", " Bananas are yellow."), ("A:", " Bananas are yellow.")])
    assert n == m == len(teacher.tokenizer.encode(" Rome.")) and fit < 0
    assert fit / n - alone_fit / m > misfit / 4 - alone_misfit / 4


def _serve(gguf, folder):
    """llama-cpp-python's OpenAI server on a free 127.0.0.1 port, serving `gguf`: yields its URL.

    Started by mlxlab's own `start_server`, so it runs with the llama.cpp self-test's settings."""
    from mlxlab.serve import start_server

    server = start_server(gguf, port=0, n_ctx=2048)
    try:
        yield server.url.removesuffix("/v1")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def llama_server(smollm2_gguf, tmp_path_factory):
    """A real llama.cpp server on the embedded GGUF."""
    yield from _serve(smollm2_gguf, tmp_path_factory.mktemp("server"))


@pytest.fixture(scope="module")
def llama_server_2(smollm2_gguf, tmp_path_factory):
    """A second, separate llama.cpp server on the same GGUF: a fleet of two."""
    yield from _serve(smollm2_gguf, tmp_path_factory.mktemp("server2"))


@pytest.mark.slow
def test_openai_backend_against_a_real_server(llama_server, monkeypatch):
    monkeypatch.setenv("MLXLAB_TEACHER_API_KEY", "sk-test")        # sent as a bearer token; the server ignores it
    teacher = make_teacher("smollm2", url=llama_server + "/v1", concurrency=2)
    assert teacher.backend == "openai"
    out = teacher.generate(_prompts(3), n=2, temperature=0.7, max_tokens=8, seed=4)
    assert [len(c) for c in out] == [2, 2, 2]
    assert all(c.text and 0 < c.tokens <= 8 and c.finish_reason in ("stop", "length") for cs in out for c in cs)
    assert teacher.stats.generated_tokens == sum(c.tokens for cs in out for c in cs)
    # seeded per completion on the server too: the same request gives the same text
    assert teacher.generate(_prompts(1), temperature=0.7, max_tokens=8, seed=4)[0][0].text == out[0][0].text
    # raw continuation through /v1/completions, cut at the stop string
    (completion,) = teacher.complete([PATTERN], stop=("\nQ:",), temperature=0.0, max_tokens=24)
    assert completion.text.strip() and "\nQ:" not in completion.text and completion.tokens > 0


@pytest.fixture(scope="module")
def one_server_texts(llama_server) -> list[str]:
    """What a single real server writes for six prompts (seeded, sampled): the reference for the fleets."""
    teacher = make_teacher("smollm2", url=llama_server, concurrency=2)
    return _texts(teacher.generate(_prompts(6), temperature=0.7, max_tokens=8, seed=3))


@pytest.mark.slow
def test_fleet_of_two_real_servers_equals_one_server(llama_server, llama_server_2, one_server_texts):
    fleet = make_teacher("smollm2", url=f"{llama_server},{llama_server_2}/v1", concurrency=1)
    assert _texts(fleet.generate(_prompts(6), temperature=0.7, max_tokens=8, seed=3)) == one_server_texts
    assert [s["url"] for s in fleet.servers] == [llama_server, llama_server_2 + "/v1"]
    assert all(s["answered"] > 0 and not s["down"] for s in fleet.servers)       # both did some of the work
    assert sum(s["answered"] for s in fleet.servers) == 6


@pytest.mark.slow
def test_fleet_with_a_dead_url_equals_one_server(llama_server, one_server_texts):
    dead = f"http://127.0.0.1:{_free_port()}"
    fleet = make_teacher("smollm2", url=[dead, llama_server], concurrency=2, **FAST)
    assert _texts(fleet.generate(_prompts(6), temperature=0.7, max_tokens=8, seed=3)) == one_server_texts
    down, up = fleet.servers
    assert down["url"] == dead and down["down"] and down["answered"] == 0 and "after 2 attempts" in down["error"]
    assert up == {"url": llama_server, "answered": 6, "down": False}


@pytest.mark.slow
def test_llama_cpp_backend_in_process(smollm2_gguf):
    teacher = Teacher(smollm2_gguf, backend="llama-cpp", n_ctx=1024)
    out = teacher.generate(_prompts(2), temperature=0.0, max_tokens=6)
    assert all(c[0].text and c[0].tokens <= 6 for c in out)
    (completion,) = teacher.complete([PATTERN], stop=("\nQ:",), temperature=0.0, max_tokens=24)
    assert completion.text.strip() and "\nQ:" not in completion.text
    assert teacher.can_score() and teacher.num_parameters() > 100e6     # scoring works in-process
    assert teacher.count_tokens("hello world") >= 2
    teacher.close()


@pytest.mark.slow
def test_sdg_through_the_openai_backend(llama_server, tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_sdg import make_taxonomy

    from mlxlab.sdg.sdg import generate_data

    tax = make_taxonomy(tmp_path / "taxonomy")
    result = generate_data(tax, teacher="smollm2", teacher_url=llama_server, output=tmp_path / "data",
                           samples_per_seed=1, max_tokens=32, judge_max_tokens=8, allow_empty=True, quiet=True)
    report = json.loads(result.report.read_text())
    # a remote teacher (size unknown) gets the LAB prompts and judges; 3 of the 5 seeds are shown to it
    assert report["backend"] == "openai" and report["methods"]["prompt_style"] == "lab"
    assert report["leaves"][0]["stages"][0] == {**report["leaves"][0]["stages"][0], "stage": "questions", "sent": 3}
    assert report["generated_tokens"] > 0
    (server,) = report["servers"]
    assert server["url"] == llama_server and server["answered"] > 0 and not server["down"]


@pytest.mark.slow
def test_sdg_through_a_fleet_writes_the_same_data_and_resumes_across_fleets(llama_server, llama_server_2, tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_sdg import make_taxonomy

    from mlxlab.sdg.sdg import generate_data

    tax = make_taxonomy(tmp_path / "taxonomy")
    settings = dict(teacher="smollm2", samples_per_seed=1, max_tokens=32, judge_max_tokens=8, allow_empty=True,
                    quiet=True)
    one = generate_data(tax, teacher_url=llama_server, output=tmp_path / "one", **settings)
    two = generate_data(tax, teacher_url=[llama_server, llama_server_2], output=tmp_path / "two", concurrency=2,
                        **settings)
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    def replies(run: str) -> list[dict]:        # every raw reply in the journal, without its timing
        (path,) = (tmp_path / run / ".journal").glob("*.jsonl")
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]

    assert replies("one") == replies("two") and len(replies("one")) > 3
    assert one.generated_tokens == two.generated_tokens > 0
    servers = json.loads(two.report.read_text())["servers"]
    assert [s["url"] for s in servers] == [llama_server, llama_server_2] and all(s["answered"] for s in servers)
    # the journal's fingerprint names the model, not the servers: another fleet resumes the finished run
    again = generate_data(tax, teacher_url=f"{llama_server_2},{llama_server}", output=tmp_path / "one", **settings)
    assert sum(s["answered"] for s in json.loads(again.report.read_text())["servers"]) == 0
    assert (tmp_path / "one" / "train.jsonl").read_bytes() == (tmp_path / "two" / "train.jsonl").read_bytes()
