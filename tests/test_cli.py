"""The CLI is a thin, lazy shell with clear errors and documented exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "mlxlab", *args], capture_output=True, text=True, cwd=cwd,
                          env=env or ENV, timeout=300)


@pytest.mark.parametrize("argv", [["--help"], ["taxonomy", "--help"], ["taxonomy", "validate", "--help"],
                                  ["model", "import", "--help"]])
def test_help_imports_no_heavy_module(argv):
    code = ("import sys; from mlxlab.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('mlx', 'mlx.core', 'mlx_lm', 'llama_cpp', 'transformers', 'rich') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_no_verb_prints_help_and_exits_2():
    out = run()
    assert out.returncode == 2 and "usage: mlxlab" in out.stderr


def test_bad_flag_exits_2():
    assert run("taxonomy", "validate", "--stirct").returncode == 2


def test_bad_config_file_is_one_clear_line(tmp_path):
    (tmp_path / "mlxlab.yaml").write_text("taxonomy:\n  strickt: true\n")
    out = run("taxonomy", "validate", cwd=tmp_path, env={**ENV, "XDG_CONFIG_HOME": str(tmp_path)})
    assert out.returncode == 1
    assert "mlxlab.yaml:2:3: unknown key 'strickt' in taxonomy (did you mean 'strict'?)" in out.stderr
    assert "Traceback" not in out.stderr


def test_init_then_refuses_to_overwrite(tmp_path):
    env = {**ENV, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert run("init", cwd=tmp_path, env=env).returncode == 0
    assert (tmp_path / "mlxlab.yaml").is_file()
    out = run("init", cwd=tmp_path, env=env)
    assert out.returncode == 1 and "already exists" in out.stderr


def test_info_json_reports_backend_blas_and_dtype():
    out = run("info", "--json", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["default_device"] == "cpu" and info["dtype"] == "float32"
    assert info["matmul_gflops"] > 0
    assert info["blas"]
    assert info["llama_cpp"]


def test_info_rejects_unknown_device():
    out = run("info", "--device", "tpu", "--no-measure")
    assert out.returncode == 1 and "unknown device 'tpu'" in out.stderr
