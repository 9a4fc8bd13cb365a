"""The examples in `--tiny` mode (offline, the embedded SmolLM2) and the notebook executed by a real kernel.

The quickstart runs first; the iteration study, the Ollama export and the notebook reuse its data and
adapters (the notebook's generate and train cells resume from them), so the module stays in minutes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_pipeline import make_taxonomy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "--tiny", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, smollm2_dir):
    """quickstart_m1.py --tiny on a one-leaf taxonomy: (work folder, its output folder, completed process)."""
    tmp = tmp_path_factory.mktemp("examples")
    make_taxonomy(tmp / "taxonomy")
    proc = _example("quickstart_m1.py", "--taxonomy", tmp / "taxonomy", "--output", tmp / "qs", cwd=tmp)
    return tmp, tmp / "qs", proc


@pytest.mark.slow
def test_quickstart_tiny(quickstart):
    _, out, proc = quickstart
    assert (out / "data" / "train.jsonl").stat().st_size > 0
    assert (out / "adapters" / "adapters.safetensors").is_file() and (out / "adapters" / "loss.png").is_file()
    (gguf,) = (out / "gguf").glob("*.gguf")
    assert "ollama create jolie -f" in proc.stdout and "held-out loss" in proc.stdout
    assert (out / "eval" / "summary.json").is_file() and gguf.stat().st_size > 0


@pytest.mark.slow
def test_iteration_study_tiny(quickstart):
    tmp, out, _ = quickstart
    proc = _example("iteration_study.py", "--data", out / "data", "--output", tmp / "study", cwd=tmp)
    assert "iteration 4: held-out loss" in proc.stdout
    for name in ("summary.md", "per_prompt.png", "mean.png", "side_by_side.png", "loss.png"):
        assert (tmp / "study" / name).is_file(), name


@pytest.mark.slow
def test_export_to_ollama_tiny(quickstart):
    tmp, out, _ = quickstart
    proc = _example("export_to_ollama.py", "--adapters", out / "adapters", "--output", tmp / "ollama",
                    "--name", "tinyjolie", cwd=tmp)
    gguf = tmp / "ollama" / "tinyjolie-q4_k_m.gguf"
    assert gguf.is_file() and f"ollama create tinyjolie -f {tmp / 'ollama'}" in proc.stdout


@pytest.mark.slow
def test_notebook_executes_offline(quickstart):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    tmp, out, _ = quickstart
    nb = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert "TINY = True" in params.source
    # papermill-style: parameters set after the tagged cell; the quickstart's data and adapters are reused
    params.source += f"\nTAXONOMY = {str(tmp / 'taxonomy')!r}\nWORK = {str(out)!r}\n"
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4                              # loss, side by side, loss curve, attention map
    assert (out / "attention" / "attention.npz").is_file()
