"""More than one process on MLX's own engine: 2 real ranks on this machine under `mlx.launch --backend ring`.

Each rank gets its own output folder (`{rank}` in the path) and rank 1 gets a data path that does not exist, so a
rank that read or wrote anything on its own disk would show: everything must travel through the group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlxlab.distributed import free_ports as free_port
from mlxlab.errors import MlxlabError
from tests.test_train import _log, adapters_max_diff, write_chat

# a script each rank runs: `{rank}` in an argument becomes the rank (MLX_RANK, set by mlx.launch)
RANK_SCRIPT = """
import json, os, sys
rank = os.environ.get("MLX_RANK", "0")
args = [a.replace("{rank}", rank) for a in sys.argv[1:]]
if args[0] == "pid":
    open(args[1], "w").write(str(os.getpid())); args = args[2:]
from mlxlab.cli import main
sys.exit(main(args))
"""


def launch(args: list[str], *, ranks: int = 2, pid_file: Path | None = None, **popen) -> subprocess.Popen:
    """`mlx.launch --backend ring --hosts 127.0.0.1 -n RANKS -- python -c RANK_SCRIPT mlxlab-args...`."""
    port = free_port()
    command = [sys.executable, "-c", "from mlx._distributed_utils.launch import main; main()",
               "--backend", "ring", "--hosts", "127.0.0.1", "-n", str(ranks), "--starting-port", str(port), "--",
               sys.executable, "-c", RANK_SCRIPT, *(["pid", str(pid_file)] if pid_file else []), *args]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def run_launch(args: list[str], timeout: float = 300, **kw) -> str:
    proc = launch(args, **kw)
    out, _ = proc.communicate(timeout=timeout)
    return out


def train_args(model: Path, data: str, out: str, settings: dict) -> list[str]:
    args = ["train", "--model", str(model), "--data", data, "--output", out]
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        else:
            args += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return args


# a moderate rate: Adam turns float noise in near-zero gradients into full-size steps, and at 2e-3 two correct
# runs whose sums differ in the last bit part after ~10 iterations on this random model (5e-4: 1.5e-6 after 40)
SETTINGS = dict(num_iters=12, batch_size=4, grad_accumulation=2, learning_rate=5e-4, steps_per_eval=4,
                save_every=4, seed=3)


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    # 22 samples: an epoch ends on a batch of 2 (one per rank) and the validation set splits unevenly
    data = write_chat(tmp_path_factory.mktemp("dist-chat") / "data", train=22, valid=7, seed=4)
    # rank 0 reads "data0"; rank 1's "data1" does not exist: rank 0 must send it the records
    (data.parent / "data0").symlink_to(data)
    return data


def ranked(data: Path) -> str:
    return str(data.parent / "data{rank}")


def test_helpers_in_one_process():
    from mlxlab import distributed as dist

    w = dist.world()
    assert (w.rank, w.size, w.main, w.describe()) == (0, 1, True, "single process")
    assert dist.from_main(lambda: {"a": 1}, "testing") == {"a": 1}
    # the types N ranks get through the broadcast's JSON, on one process too
    assert dist.from_main(lambda: {1: (Path("x"), 2.5)}, "testing") == {"1": ["x", 2.5]}
    assert dist.gather_json([1, "x"], "testing") == [[1, "x"]]
    dist.check_batch(3, w)
    with pytest.raises(MlxlabError, match="does not split over 2 ranks") as info:
        dist.check_batch(3, dist.World(0, 2, "ring"))
    assert "--batch-size 4 or 2" in info.value.hint
    # longest first onto the least-loaded rank: deterministic, balanced
    assert dist.shares([5, 1, 4, 2, 3], 2) == [0, 0, 1, 0, 1]     # loads 8 and 7
    assert dist.shares([1, 1, 1], 1) == [0, 0, 0]


def test_two_ranks_train_the_same_adapters_as_one(tiny_llama, odd_data, tmp_path):
    from mlxlab.train.loop import train

    one = train(tiny_llama, odd_data, tmp_path / "one", quiet=True, **SETTINGS)
    out = run_launch(train_args(tiny_llama, ranked(odd_data), str(tmp_path / "two-{rank}"), SETTINGS))
    assert "Traceback" not in out, out
    two, idle = tmp_path / "two-0", tmp_path / "two-1"
    assert not idle.exists(), f"rank 1 wrote {list(idle.rglob('*'))}"
    assert adapters_max_diff(one.adapters, two) <= 1e-4, out
    result = json.loads((two / "result.json").read_text())
    assert result["world_size"] == 2 and one.world_size == 1
    assert sum(result["rank_tokens"]) == sum(one.rank_tokens) and min(result["rank_tokens"]) > 0
    single, double = _log(one.log), _log(two / "train_log.jsonl")
    assert [r["iter"] for r in single] == [r["iter"] for r in double]
    for a, b in zip(single, double):
        for key in ("loss", "val_loss", "tokens"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-4), (key, a, b)
    assert sorted(int(p.name[5:]) for p in (two / "checkpoints").glob("iter_*")) == [4, 8, 12]


def test_kill_one_rank_then_resume_under_two_ranks(tiny_llama, odd_data, tmp_path):
    from mlxlab.train.loop import train

    settings = {**SETTINGS, "num_iters": 40, "save_every": 2, "steps_per_eval": 0}
    one = train(tiny_llama, odd_data, tmp_path / "one", quiet=True, **settings)
    data, out = ranked(odd_data), tmp_path / "two-0"
    pids = tmp_path / "pid-{rank}"
    proc = launch(train_args(tiny_llama, data, str(tmp_path / "two-{rank}"), settings), pid_file=pids)
    deadline = time.time() + 180
    while not (out / "checkpoints" / "iter_000006").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.02)
    os.kill(int((tmp_path / "pid-1").read_text()), signal.SIGKILL)
    started = time.time()
    text, _ = proc.communicate(timeout=60)          # the other rank stops: no hang
    assert time.time() - started < 60
    assert "Traceback" not in text, text
    assert not (out / "result.json").exists()
    killed_at = max(int(p.name[5:]) for p in (out / "checkpoints").glob("iter_??????"))
    assert 6 <= killed_at < 40

    text = run_launch(train_args(tiny_llama, data, str(tmp_path / "two-{rank}"), {**settings, "resume": True}))
    assert "Traceback" not in text, text
    assert adapters_max_diff(one.adapters, out) <= 1e-4, text
    assert [r["iter"] for r in _log(out / "train_log.jsonl") if "loss" in r] == list(range(1, 41))
    assert not (tmp_path / "two-1").exists()


def test_batch_that_does_not_split_is_a_clear_error_on_every_rank(tiny_llama, odd_data, tmp_path):
    text = run_launch(train_args(tiny_llama, str(odd_data), str(tmp_path / "out"), {"batch_size": 3,
                                                                                     "num_iters": 2}))
    # every rank finds it; mlx.launch may stop the slower one before it prints
    assert "batch_size 3 does not split over 2 ranks" in text and "hint: use --batch-size 4 or 2" in text, text
    assert "Traceback" not in text and not (tmp_path / "out").exists()


def _ranks_by_hand(script: str, tmp_path: Path) -> list[subprocess.Popen]:
    """2 ranks of `script` joined over the ring backend on 127.0.0.1, started without a launcher."""
    port = free_port()
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{port}"], [f"127.0.0.1:{port + 1}"]]))
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "MLX_HOSTFILE": str(hostfile)}
    return [subprocess.Popen([sys.executable, "-c", script], env={**env, "MLX_RANK": str(r)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]


def test_a_rank_that_dies_is_a_clear_error_without_the_launcher(tmp_path):
    """Started by hand (no launcher to stop the rest): the survivor's collective fails with a clear MlxlabError."""
    script = ("import os, sys\nfrom mlxlab import distributed as dist\nfrom mlxlab.errors import MlxlabError\n"
              "w = dist.world()\nif w.rank == 1:\n    os._exit(3)\n"
              "try:\n    dist.gather_json({'x': 1}, 'gathering the results')\n"
              "except MlxlabError as exc:\n    print('CLEAR:', exc)\n")
    procs = _ranks_by_hand(script, tmp_path)
    out = procs[0].communicate(timeout=60)[0]
    procs[1].wait(timeout=60)
    assert "CLEAR: rank 0 of 2 (ring): lost the connection to another rank while gathering the results" in out, out
    assert "another rank stopped" in out


def test_any_error_of_rank_0_in_from_main_reaches_the_other_ranks(tmp_path):
    """Not only an MlxlabError: rank 0 raises its own exception, rank 1 a clear MlxlabError, and they stay in step."""
    script = ("from mlxlab import distributed as dist\nfrom mlxlab.errors import MlxlabError\n"
              "def plan():\n    raise ValueError('boom')\n"
              "try:\n    dist.from_main(plan, 'planning')\n"
              "except MlxlabError as exc:\n    print('CLEAR:', exc)\n"
              "except ValueError as exc:\n    print('OWN:', repr(exc))\n"
              "print('NEXT:', dist.gather_json(dist.world().rank, 'gathering'))\n")
    procs = _ranks_by_hand(script, tmp_path)
    try:
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert "OWN: ValueError('boom')" in outs[0] and "NEXT: [0, 1]" in outs[0], outs
    assert "CLEAR: rank 0 stopped while planning: ValueError: boom" in outs[1] and "rank 0's output" in outs[1]
    assert "NEXT: [0, 1]" in outs[1], outs


def test_a_forced_generate_redo_clears_rank_0s_data_and_only_the_other_ranks_journals(tmp_path):
    """`mlxlab run --from generate` on 2 ranks. Each rank has its own runs folder here, as on two machines: rank 0
    removes its data folder; rank 1 drops only its own journals (rank 0 alone writes the rest) and waits for rank 0,
    since ranks on one machine share a folder. The teacher is no model, so the stage stops right after."""
    from tests.test_sdg import make_taxonomy

    tax = make_taxonomy(tmp_path / "taxonomy")
    junk = tmp_path / "junk.gguf"
    junk.write_text("not a model")
    config = tmp_path / "mlxlab.yaml"
    config.write_text("generate:\n  teacher_backend: llama-cpp\n")
    for rank in (0, 1):
        journals = tmp_path / f"runs-{rank}" / "r" / "data" / ".journal"
        journals.mkdir(parents=True)
        (journals / f"leaf{'.rank1' if rank else ''}.jsonl").write_text('{"journal": 1}\n')
        (journals.parent / "train.jsonl").write_text("old data\n")
    text = run_launch(["--config", str(config), "run", "r", "--runs-dir", str(tmp_path / "runs-{rank}"),
                       "--taxonomy", str(tax), "--teacher", str(junk), "--stages", "generate", "--from", "generate",
                       "--quiet"], timeout=120)
    assert "not a readable GGUF file" in text and "Traceback" not in text, text
    assert not (tmp_path / "runs-0" / "r" / "data").exists()
    rank1 = tmp_path / "runs-1" / "r" / "data"
    assert (rank1 / "train.jsonl").is_file() and not (rank1 / ".journal" / "leaf.rank1.jsonl").exists(), text


# ---------------------------------------------------------------------------------------------- sharded SDG

def _sdg_final(out: Path) -> dict:
    from tests.test_sdg import _final

    final = _final(out)
    del final["journal"]            # each rank keeps its own journal
    return final


@pytest.mark.slow
def test_sdg_on_two_ranks_writes_the_same_bytes_as_one(smollm2_dir, tmp_path):
    from tests.test_sdg import SMALL, make_taxonomy

    tax = make_taxonomy(tmp_path / "taxonomy", knowledge=True)
    small = [*SMALL, "--chunk-tokens", "64", "--taxonomy", str(tax)]
    subprocess.run([sys.executable, "-m", "mlxlab", "generate", *small, "--output", str(tmp_path / "one")],
                   check=True, timeout=600, capture_output=True)
    text = run_launch(["generate", *small, "--output", str(tmp_path / "two-{rank}")], timeout=600)
    assert "Traceback" not in text, text
    two = tmp_path / "two-0"
    assert _sdg_final(two) == _sdg_final(tmp_path / "one"), text
    report = json.loads((two / "report.json").read_text())
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    assert report["world_size"] == 2 and one["world_size"] == 1
    assert [r["rank"] for r in report["ranks"]] == [0, 1] and min(r["units"] for r in report["ranks"]) > 0
    assert sum(r["units"] for r in report["ranks"]) == one["ranks"][0]["units"]
    # rank 1 wrote its journal only: no datasets, no report
    assert {p.parent.name for p in (tmp_path / "two-1").rglob("*") if p.is_file()} == {".journal"}


@pytest.mark.slow
def test_sdg_rank_killed_then_rerun_resumes_from_every_journal(smollm2_dir, tmp_path):
    from tests.test_sdg import SMALL, make_taxonomy

    tax = make_taxonomy(tmp_path / "taxonomy")
    small = [*SMALL, "--taxonomy", str(tax)]
    subprocess.run([sys.executable, "-m", "mlxlab", "generate", *small, "--output", str(tmp_path / "one")],
                   check=True, timeout=600, capture_output=True)
    args = ["generate", *small, "--output", str(tmp_path / "two-{rank}")]
    proc = launch(args, pid_file=tmp_path / "pid-{rank}")
    journal = tmp_path / "two-1" / ".journal" / "compositional_skills__writing__haiku.rank1.jsonl"
    deadline = time.time() + 300
    while not (journal.exists() and len(journal.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    os.kill(int((tmp_path / "pid-1").read_text()), signal.SIGKILL)
    started = time.time()
    text = proc.communicate(timeout=120)[0]                # rank 0 stops too: no hang
    assert time.time() - started < 120 and "Traceback" not in text, text
    assert not (tmp_path / "two-0" / "report.json").exists()
    done_before = len(journal.read_text().splitlines()) - 1

    text = run_launch(args, timeout=600)
    assert "Traceback" not in text, text
    assert _sdg_final(tmp_path / "two-0") == _sdg_final(tmp_path / "one"), text
    report = json.loads((tmp_path / "two-0" / "report.json").read_text())
    total = json.loads((tmp_path / "one" / "report.json").read_text())["ranks"][0]["units"]
    # the rerun generated only what no journal held
    assert sum(r["units"] for r in report["ranks"]) <= total - done_before
