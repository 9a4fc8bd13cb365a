"""OpenBLAS binding, the dtype policy, and that results agree with and without OpenBLAS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlxlab import device

ROOT = Path(__file__).resolve().parents[1]
needs_openblas = pytest.mark.skipif(sys.platform != "linux" or device.find_openblas() is None,
                                    reason="OpenBLAS binding is for Linux with libopenblas installed")


def python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@needs_openblas
def test_import_binds_openblas_before_mlx():
    out = python("import mlxlab, mlx.core as mx; from mlxlab.device import blas_status; "
                 "print(blas_status()[1]); print(mlxlab.device_info(measure=False).blas)")
    assert out.returncode == 0, out.stderr
    reason, blas = out.stdout.strip().splitlines()
    assert reason == "bound" and blas.startswith("OpenBLAS (")


def test_blas_off_keeps_the_stock_blas():
    out = python("import mlxlab; from mlxlab.device import blas_status; print(blas_status())", MLXLAB_BLAS="off")
    assert out.returncode == 0 and "disabled by MLXLAB_BLAS=off" in out.stdout


@needs_openblas
def test_mlx_imported_first_warns_once_with_the_fix():
    out = python("import mlx.core; import warnings; warnings.simplefilter('always'); import mlxlab; "
                 "from mlxlab.device import bind_blas; bind_blas(); print(mlxlab.device.blas_status()[0])")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("mlx.core was imported before mlxlab") == 1
    assert "import mlxlab` before `import mlx.core" in out.stderr
    assert out.stdout.strip() == "None"


def test_unloadable_blas_path_does_not_break_import(tmp_path):
    bogus = tmp_path / "libopenblas.so.0"
    bogus.write_text("not a library")
    out = python("import warnings; warnings.simplefilter('always'); import mlxlab; import mlx.core as mx; "
                 "print(mx.ones(2).sum().item())", MLXLAB_BLAS=str(bogus))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2.0"
    if sys.platform == "linux":
        assert "could not be loaded" in out.stderr and "MLXLAB_BLAS=off" in out.stderr


@needs_openblas
@pytest.mark.slow
def test_openblas_and_stock_blas_agree_on_logits_and_lora_steps(tmp_path):
    outs = {}
    for name, blas in (("stock", "off"), ("openblas", "")):
        env = {**os.environ}
        env.pop("MLXLAB_BLAS", None)
        if blas:
            env["MLXLAB_BLAS"] = blas
        path = tmp_path / f"{name}.npz"
        run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "backends.py"), "--probe", str(path)],
                             capture_output=True, text=True, timeout=600, env=env)
        assert run.returncode == 0, run.stderr
        outs[name] = np.load(path)
    stock, fast = outs["stock"], outs["openblas"]
    assert set(stock.files) == set(fast.files) and len(stock.files) > 3
    # Same math, another summation order: float32 round-off only.
    np.testing.assert_allclose(fast["logits"], stock["logits"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(fast["losses"], stock["losses"], atol=1e-4, rtol=1e-5)
    assert fast["losses"][-1] < fast["losses"][0]  # the steps really trained
    for key in stock.files:
        np.testing.assert_allclose(fast[key], stock[key], atol=1e-4, rtol=1e-3, err_msg=key)


def test_dtype_policy(monkeypatch):
    mx = device.import_mlx()
    monkeypatch.delenv(device.DTYPE_ENV, raising=False)
    mx.set_default_device(mx.cpu)
    assert device.dtype_name() == "float32"
    assert device.dtype_name("bf16") == "bfloat16"
    monkeypatch.setenv(device.DTYPE_ENV, "float16")
    assert device.dtype_name() == "float16"
    with pytest.raises(device.MlxlabError, match="unknown dtype"):
        device.dtype_name("float8")


def test_gpu_policy_computes_gemma_in_bfloat16(monkeypatch, make_tiny_model):
    """float16 cannot hold Gemma's residual at BOS (~67,000): where the policy says float16, Gemma gets bfloat16;
    other models and an explicit float16 keep float16."""
    from mlx.utils import tree_flatten
    from mlx_lm import load

    mx = device.import_mlx()
    monkeypatch.delenv(device.DTYPE_ENV, raising=False)
    monkeypatch.setattr(device, "current_device", lambda: "gpu")       # the policy Metal and CUDA get
    dtypes = {}
    for arch, dtype in (("gemma3_text", None), ("llama", None), ("gemma3_text", "float16")):
        model, _ = load(str(make_tiny_model(arch)))
        device.apply_dtype(model, dtype)
        dtypes[arch, dtype] = {v.dtype for _, v in tree_flatten(model.parameters())}
    assert dtypes == {("gemma3_text", None): {mx.bfloat16}, ("llama", None): {mx.float16},
                      ("gemma3_text", "float16"): {mx.float16}}


def test_apply_dtype_keeps_4bit_weights_and_makes_scales_float32():
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    mx = device.import_mlx()
    layer = nn.Linear(64, 32)
    layer.set_dtype(mx.float16)
    q = nn.QuantizedLinear.from_linear(layer, group_size=32, bits=4)
    before = q(mx.ones((1, 64), dtype=mx.float16)).astype(mx.float32)
    assert q.scales.dtype == mx.float16
    device.apply_dtype(q, "float32", dequantize_on_load="never")
    params = dict(tree_flatten(q.parameters()))
    assert params["weight"].dtype == mx.uint32
    assert params["scales"].dtype == mx.float32 and params["biases"].dtype == mx.float32
    after = q(mx.ones((1, 64)))
    assert np.allclose(np.array(after), np.array(before), atol=2e-2)  # f16 activations before, f32 after


def test_llama_threads_is_one_on_two_cpus(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert device.llama_threads() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert device.llama_threads() >= 4


def test_cpu_policy_dequantizes_small_quantized_models_exactly(monkeypatch):
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    monkeypatch.delenv(device.DEQUANTIZE_ENV, raising=False)
    mx = device.import_mlx()
    mx.set_default_device(mx.cpu)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 32))
    nn.quantize(model, group_size=32, bits=4)
    x = mx.random.normal((2, 64))
    reference = model(x)
    assert device.is_quantized(model) and device.should_dequantize(model)
    assert not device.should_dequantize(model, "never")
    device.apply_dtype(model)
    assert not device.is_quantized(model)
    assert all(v.dtype == mx.float32 for _, v in tree_flatten(model.parameters()))
    np.testing.assert_allclose(np.array(model(x)), np.array(reference), atol=1e-5)
    with pytest.raises(device.MlxlabError, match="unknown dequantize_on_load setting"):
        device.should_dequantize(model, "sometimes")


def test_linux_without_openblas_says_once_what_it_costs_and_how_to_fix_it(monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    for key, value in (("bound", None), ("reason", "OpenBLAS not found (...)"), ("warned", False)):
        monkeypatch.setitem(device._blas_state, key, value)
    device.import_mlx()
    device.import_mlx()
    err = capsys.readouterr().err
    assert err.count("OpenBLAS is not installed") == 1 and "apt-get install libopenblas0-pthread" in err
