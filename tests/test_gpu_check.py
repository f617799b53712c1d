"""`make gpu-check` on a machine without a GPU: the benchmark's code path on the CPU (--device cpu --tiny), the
offline installer's choice of wheels, and the clear refusal when no GPU is present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_env


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")


def test_gpu_bench_runs_on_cpu_tiny(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "bench/gpu_bench.py", "--device", "cpu", "--tiny", "--out", str(out)],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(out.read_text())
    assert json.loads(run.stdout) == r and r["tiny"] and r["device"]["device"] == "cpu" and "errors" not in r
    assert r["matmul_peak"]["peak_tflops"] > 0
    for size in ("small", "large"):
        t, im = r["dynamics_train"][size], r["imagination"][size]
        assert t["latent_tokens_per_s"] > 0 and 0 < t["mfu"] and t["params"] > 0 and t["skipped_steps"] == 0
        assert t["model_tflop_per_step"] > 0 and t["sec_per_step"] > 0
        assert im["kv_cache"]["env_frames_per_s"] == pytest.approx(im["kv_cache"]["latent_steps_per_s"] * im["S"])
        assert 0 < im["env_frames_per_s_with_decode"] < im["kv_cache"]["env_frames_per_s"]
    assert r["dynamics_train"]["large"]["params"] > r["dynamics_train"]["small"]["params"]
    assert r["imagination"]["small"]["kv_cache_speedup"] > 0
    tok = r["tokenizer"]["tiny"]
    assert tok["encode"]["frames_per_s"] > 0 and tok["decode"]["frames_per_s"] > 0 and tok["resolution"] == 64


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: make gpu-check runs instead of refusing")
def test_gpu_check_without_gpu_says_so(tmp_path):
    run = subprocess.run(["bash", "bench/gpu_check.sh", str(tmp_path)], cwd=ROOT,
                         env=dict(_env(), PYTHON=sys.executable), capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode != 0
    assert "no GPU present" in run.stderr and "torch.cuda.is_available() is False" in run.stderr
    assert not (tmp_path / "gpu_bench.json").exists()


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    path = folder / f"{name}-{version}-py3-none-any.whl"
    meta = "\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                      *(f"Requires-Dist: {r}" for r in requires)]) + "\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return path


def test_offline_installer_takes_only_what_the_interpreter_lacks(tmp_path):
    """Requirements already met stay as they are (torch, numpy here); missing ones and their own requirements come
    from the folder, the newest fitting wheel; markers and extras are honoured; a gap is named."""
    _wheel(tmp_path, "dreamer_fake_top", "1.0", ["dreamer_fake_dep>=2,<3", "numpy>=1", "dreamer_fake_gui; extra == 'gui'",
                                                 "dreamer_fake_old; python_version < '3'"])
    _wheel(tmp_path, "dreamer_fake_dep", "1.5", [])
    _wheel(tmp_path, "dreamer_fake_dep", "2.1", ["torch>=1"])
    _wheel(tmp_path, "dreamer_fake_dep", "3.0", [])
    _wheel(tmp_path, "numpy", "0.1", [])  # never chosen: this interpreter's numpy satisfies numpy>=1
    chosen, kept = gpu_env.resolve(["dreamer_fake_top"], tmp_path)
    assert {k: v.name for k, v in chosen.items()} == {"dreamer-fake-top": "dreamer_fake_top-1.0-py3-none-any.whl",
                                                     "dreamer-fake-dep": "dreamer_fake_dep-2.1-py3-none-any.whl"}
    assert set(kept) == {"numpy", "torch"}
    with pytest.raises(gpu_env.MissingWheel, match=r"lacks dreamer_fake_absent>=1 \(needed by pyproject.toml\)"):
        gpu_env.resolve(["dreamer_fake_absent>=1"], tmp_path)
    with pytest.raises(gpu_env.MissingWheel, match=r"has numpy .* which does not satisfy numpy<0\.5"):
        gpu_env.resolve(["numpy<0.5"], tmp_path / "empty")
