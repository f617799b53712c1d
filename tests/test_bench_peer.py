"""bench/bench_peer.py without the peer or the network: the torchvision stand-in imports but refuses any use, the
ratios are ours / peer of the per-side medians, and our side runs bench_dynamics.py at the peer's shapes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_peer", ROOT / "bench" / "bench_peer.py")
bench_peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_peer)

USE = """
import torchvision
from torchvision.models import VGG16_Weights
import torchvision.transforms as T
default = VGG16_Weights.DEFAULT  # dreamer4 evaluates this at import: must not raise
for use in (lambda: torchvision.models.vgg16(weights=default), lambda: default.url, lambda: T.Compose([])):
    try:
        use()
    except RuntimeError as e:
        assert "bench_peer" in str(e), e
    else:
        raise SystemExit("a use of the stand-in did not raise")
print("ok")
"""


def test_torchvision_stand_in_imports_and_refuses_use(tmp_path):
    bench_peer.write_torchvision_shim(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", USE], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _side(tokens, steps, sec, mm):
    return {"train": {"latent_tokens_per_sec": tokens, "sec_per_step": sec}, "rollout":
            {"batch_latent_steps_per_sec": steps}, "matmul_fp32_gflops": {"before": mm, "after": mm / 2}}


def test_ratios_are_of_medians_and_fractions_use_our_flop_count():
    rounds = [{"ours": _side(300, 30, 1.0, 100), "peer": _side(100, 10, 2.0, 100)},
              {"ours": _side(200, 20, 1.0, 200), "peer": _side(50, 5, 2.0, 200)},
              {"ours": _side(250, 99, 1.0, 100), "peer": _side(90, 1, 2.0, 100)}]
    s = bench_peer.summarise(rounds, flops=50e9)
    assert s["train_latent_tokens_per_sec"]["ratio_ours_over_peer"] == 250 / 90
    assert s["imagined_latent_steps_per_sec_kv_cache"]["rounds"]["peer"] == [10, 5, 1]
    frac = s["fraction_of_matmul_peak"]
    assert frac["rounds"]["ours"] == [0.5, 0.25, 0.5] and frac["rounds"]["peer"] == [0.25, 0.125, 0.25]
    assert frac["ratio_ours_over_peer"] == 2.0
    assert "ours/peer" in bench_peer.table(s)


def test_ours_runs_bench_dynamics_at_the_peer_shapes_with_the_flags():
    cmd = bench_peer.ours_command("python", 10, ["--bf16", "--compile"])
    assert cmd[1].endswith("bench/bench_dynamics.py")
    seq = cmd[2:cmd.index("--bf16")]
    args = dict(zip(seq[::2], seq[1::2]))
    assert args == {"--batch": "8", "--time": "8", "--tokens": "16", "--channels": "16", "--cards": "17",
                    "--chunk": "1", "--steps": "10", "--context": "8", "--horizons": "16", "--rollout-batch": "8"}
    assert cmd.index("--compile") < cmd.index("--cfg")  # flags before the nargs='*' --cfg list
    assert cmd[cmd.index("--cfg") + 1:] == ["d_model=256", "num_layers=4", "num_heads=4", "num_kv_heads=4",
                                             "bootstrap_fraction=None"]
