"""Side-by-side CPU benchmark: this project's dynamics model against the peer `dreamer4==0.20.2` (lucidrains).

Measured, ours / peer, in ONE run with the two sides alternating (round r: ours, then peer), each side in its own
subprocess that does its own warm-up before timing; the medians of each side and every round's figure are reported:
  1. training latent tokens/s: B*T*N / seconds per optimiser step (forward + backward + AdamW step, lr 1e-4);
  2. imagined latent steps/s with the KV cache: rollout batch * horizon / seconds (best of 2 generations, as
     bench_dynamics.py times ours; the prompt / context is processed inside the timed call on both sides);
  3. fraction of this machine's fp32 matmul peak: achieved GFLOP/s / fp32 matmul GFLOP/s measured in the same
     subprocess before and after its work (the larger). The FLOPs of a training step are OUR analytic count
     (bench_dynamics.forward_flops_per_step, taken from our side's JSON) for BOTH sides: the shapes are the same,
     and the peer's extra modules (value residual, gated / "belief" attention, attention pools between layers,
     final agent-token cross-attention) are not counted, so the peer's figure understates its own arithmetic.

Shapes (both sides): d_model 256, 4 layers, 4 heads of dim 64, no GQA, 16 latent tokens x 16 channels, batch
8 clips x 8 latent steps, 17 discrete actions, causal time attention in layers 2 and 4 (our time_every=2; the peer
gets time_block_every=2, its default of 4 would leave one time layer), 4 register tokens on both (peer default 8).
Every training row is a shortcut (bootstrap) row: ours bootstrap_fraction=None (every (row, step) draws its step size,
teacher passes on all rows); the peer prob_shortcut_train=1.0 (it draws ONE coin per batch, `rand(1) < p`, and on
a shortcut batch every row gets a step size 2..32/64 and both no-grad teacher passes run on the whole batch).
The peer's own autoregressive action (behaviour-cloning) loss, which it adds by default when actions are given, is
switched off (forward(add_autoregressive_action_loss=False)): ours trains the dynamics alone. Actions: one discrete
action per latent step on the peer (its action token at step t is the action taken at t-1), which is our chunk S=1.
Imagination: context 8, horizon 16, batch 8, 4 sampling steps per latent; the peer's `generate(use_time_cache=True)`
runs 4 denoising forwards + 1 forward of the clean latent that writes the cache per latent, ours the same 4 + 1
(ours prefills the context in one forward, the peer runs its first latent's 5 forwards over the whole prompt).

Fairness: the same torch (2.13.0, CPU) on both sides, checked; the same thread settings (OMP_WAIT_POLICY=PASSIVE and
GOMP_SPINCOUNT=20000 unless set, as the Makefile; torch.get_num_threads() and the OpenMP variables reported per side);
the two never share a process.

The peer is never a dependency of this project. `--install` builds a scratch venv (default /tmp/dreamer_peer_venv)
with torch==2.13.0, dreamer4==0.20.2 --no-deps and the peer's runtime requirements EXCEPT torchvision and torchaudio
(PyPI's torchvision does not import beside torch 2.13.0 here, and a matching pair is a multi-GB CUDA build;
torchaudio is imported only inside the peer's audio tokenizer). dreamer4 imports torchvision at module top only for
its video tokenizer's VGG perceptual loss (`from torchvision.models import VGG16_Weights`) and its video trainers
(`torchvision.transforms`), which this bench never calls, so a minimal stand-in `torchvision` package is written into
the venv's site-packages: anything that tries to USE it raises a RuntimeError naming this script. Checked by
importing dreamer4 in the venv, nothing else needs one (opencv-python, imageio, imageio-ffmpeg install and import).
vit-pytorch is installed --no-deps (it declares torchvision; its __init__ imports torchvision.transforms, which the
stand-in covers).

What a reader of the figures should know about the peer: it is run with its defaults otherwise, i.e. eager fp32,
attention by einsum + softmax (its tanh soft-clamp of the scores, attn_softclamp_value=50, rules out SDPA), and it
builds ~59M parameters of which ~5M (the dynamics path) get gradients; the policy / value / reward / terminal heads
sit idle, and AdamW skips parameters without a gradient.

Usage (from the repo root; the driver needs only the standard library, ours runs in .venv, the peer in its venv):
  python bench/bench_peer.py --install                      # once, builds /tmp/dreamer_peer_venv
  OMP_WAIT_POLICY=PASSIVE python bench/bench_peer.py --rounds 3 --json /tmp/peer.json
  /tmp/dreamer_peer_venv/bin/python bench/bench_peer.py --side peer    # one side alone, one JSON line (or --side ours)
--ours-flags (default "--bf16 --compile") goes to bench/bench_dynamics.py; --peer-args '{"time_block_every": 4}'
overrides the peer's constructor args (PEER_ARGS). JSON on stdout (and --json PATH); progress and a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("bench_peer")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))  # cpu_peak: no `dreamer` import, so it also runs in the peer's venv
from cpu_peak import matmul_gflops, threads

PEER_PIN = "dreamer4==0.20.2"
TORCH_PIN = "torch==2.13.0"
# dreamer4 0.20.2's Requires-Dist (wheel METADATA) less torch (pinned above), torchvision, torchaudio (shimmed /
# unused) and vit-pytorch (installed --no-deps below, it declares torchvision).
PEER_REQS = ["accelerate", "adam-atan2-pytorch>=0.3.6", "assoc-scan", "discrete-continuous-embed-readout>=0.2.10",
             "einops>=0.8.1", "einx>=0.3.0", "ema-pytorch", "env-ssl-wrapper>=0.1.8", "fire",
             "h-net-dynamic-chunking>=0.5.12", "hl-gauss-pytorch>=0.2.7", "imageio", "imageio-ffmpeg", "loguru",
             "mean-conc-beta>=0.2.9", "memmap-replay-buffer>=0.1.10", "opencv-python", "pillow", "pope-pytorch>=0.2.1",
             "rich", "torch-einops-utils>=0.1.36", "tqdm", "x-mlps-pytorch>=0.3.5", "x-transformers>=2.19.7"]
SHIM_NOTE = ("the peer's venv holds a stand-in `torchvision` (no torchvision wheel imports beside torch 2.13.0 "
             "here): dreamer4 imports it at module top only for its video tokenizer's VGG perceptual loss and video "
             "trainers, which this bench never calls; any use of it raises")
SHIM = '''"""NOT torchvision: a stand-in written by bench/bench_peer.py so that `import dreamer4` works without it.

dreamer4 imports torchvision at module top only for its video tokenizer's VGG perceptual loss
(`from torchvision.models import VGG16_Weights`) and its video trainers (`torchvision.transforms`).
"""
__version__ = "0.0.0+bench_peer_stand_in"
MSG = ("torchvision here is a stand-in written by bench/bench_peer.py (the dynamics benchmark never needs it); "
       "{} was used")


class Unavailable:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        raise RuntimeError(MSG.format(f"{self._name}.{attr}"))

    def __call__(self, *args, **kwargs):
        raise RuntimeError(MSG.format(self._name))

    def __repr__(self):
        return f"<stand-in for {self._name}>"


def module_getattr(module):
    def getattr_(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Unavailable(f"{module}.{name}")
    return getattr_


__getattr__ = module_getattr("torchvision")
from . import models, transforms  # noqa: E402,F401
'''
SHIM_MODELS = '''from torchvision import Unavailable, module_getattr


class VGG16_Weights:  # dreamer4 evaluates VGG16_Weights.DEFAULT as a default argument at import
    DEFAULT = Unavailable("torchvision.models.VGG16_Weights.DEFAULT")


__getattr__ = module_getattr("torchvision.models")
'''
SHIM_TRANSFORMS = '''from torchvision import module_getattr

__getattr__ = module_getattr("torchvision.transforms")
'''


def venv_python(venv: str) -> str:
    return str(Path(venv) / "bin" / "python")


def write_torchvision_shim(site: Path) -> Path:
    tv = site / "torchvision"
    for sub in ("models", "transforms"):
        (tv / sub).mkdir(parents=True, exist_ok=True)
    (tv / "__init__.py").write_text(SHIM)
    (tv / "models" / "__init__.py").write_text(SHIM_MODELS)
    (tv / "transforms" / "__init__.py").write_text(SHIM_TRANSFORMS)
    return tv


def install(venv: str) -> None:
    """Create (or top up) the scratch venv with the peer, its requirements and the torchvision stand-in."""
    py = venv_python(venv)
    if not Path(py).exists():
        log.info("creating venv %s", venv)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [py, "-m", "pip", "install", "-q"]
    for cmd in ([TORCH_PIN], ["--no-deps", PEER_PIN], [TORCH_PIN, *PEER_REQS], ["--no-deps", "vit-pytorch>=1.21.5"]):
        log.info("pip install %s", " ".join(cmd))
        subprocess.run(pip + cmd, check=True)
    log.info("(pip's complaint above that dreamer4 requires torchvision, torchaudio, vit-pytorch is expected)")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    log.info("wrote the torchvision stand-in to %s: %s", write_torchvision_shim(Path(site)), SHIM_NOTE)
    check = "import torch, dreamer4; from dreamer4 import DynamicsWorldModel; print(torch.__version__)"
    out = subprocess.run([py, "-c", check], check=False, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"`import dreamer4` fails in {venv}:\n{out.stderr[-3000:]}")
    log.info("peer venv ready: %s imports dreamer4 with torch %s", py, out.stdout.strip())


# ----------------------------------------------------------------------------------------------------------------
# Shapes and settings shared by both sides.
B, T, N, C, CARDS, CONTEXT, HORIZON, RB, SAMPLE_STEPS = 8, 8, 16, 16, 17, 8, 16, 8, 4
OURS_CFG = ["d_model=256", "num_layers=4", "num_heads=4", "num_kv_heads=4", "bootstrap_fraction=None"]
PEER_ARGS = {
    "dim": 256, "dim_latent": C, "num_latent_tokens": N,
    "num_spatial_tokens": N,  # 16 transformer tokens per step, a Linear from each latent token (default 4 = pooled)
    "depth": 4, "attn_heads": 4, "attn_dim_head": 64,  # query heads = kv heads (no GQA) by default
    "time_block_every": 2,  # our time_every=2: layers 2 and 4 attend over time (peer default 4)
    "num_register_tokens": 4,  # our num_registers (peer default 8)
    "num_discrete_actions": CARDS,
    "max_steps": 64,  # = our k_max (also the peer default)
    "prob_shortcut_train": 1.0,  # every training batch (hence every row) is a shortcut / bootstrap one
}
PEER_FORWARD = {"add_autoregressive_action_loss": False}


def peer_side(train_steps: int, peer_args: dict) -> dict:
    import importlib.metadata as md

    import torch
    from dreamer4 import DynamicsWorldModel

    torch.manual_seed(0)
    mm = matmul_gflops()
    model = DynamicsWorldModel(**peer_args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    z = torch.randn(B, T, N, C)
    acts = torch.randint(0, CARDS, (B, T, 1))

    def one():
        loss = model(latents=z, discrete_actions=acts, **PEER_FORWARD)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    calls = []  # a check of the settings, outside the timed work: main-transformer calls, with a KV cache or not

    def count():
        return model.transformer.register_forward_pre_hook(
            lambda mod, a, kw: calls.append(kw.get("cache") is not None), with_kwargs=True)

    hook = count()
    for _ in range(2):  # warm-up, as bench_dynamics.bench_train
        one()
    hook.remove()
    train_calls, calls[:] = len(calls) / 2, []
    trained = sum(p.numel() for p in model.parameters() if p.grad is not None)
    t0 = time.perf_counter()
    for _ in range(train_steps):
        one()
    sec = (time.perf_counter() - t0) / train_steps

    prompt = torch.randn(RB, CONTEXT, N, C)
    prompt_acts = torch.zeros(RB, CONTEXT, 1, dtype=torch.long)  # actions after the prompt: 0, as ours (zeros)
    best, hook = float("inf"), count()
    for _ in range(2):  # best of 2, as bench_dynamics.bench_rollout
        t0 = time.perf_counter()
        out = model.generate(CONTEXT + HORIZON, num_steps=SAMPLE_STEPS, batch_size=RB, prompt_latents=prompt,
                             prompt_discrete_actions=prompt_acts, use_time_cache=True, store_agent_embed=False,
                             return_decoded_video=False)
        best = min(best, time.perf_counter() - t0)
        hook.remove()  # counted over the first generation only
    assert out.shape == (RB, CONTEXT + HORIZON, N, C), out.shape
    return {"side": "peer", "torch": torch.__version__, "threads": threads(),
            "versions": {p: md.version(p) for p in ("dreamer4", "x-transformers", "einops")},
            "constructor_args": peer_args, "forward_args": PEER_FORWARD, "optimiser": "torch.optim.AdamW(lr=1e-4)",
            "params": sum(p.numel() for p in model.parameters()), "params_with_grad": trained,
            "transformer_calls": {"per_train_step": train_calls, "per_generation": len(calls),
                                  "per_generation_with_kv_cache": sum(calls)},
            "train": {"steps": train_steps, "sec_per_step": sec, "latent_tokens_per_sec": B * T * N / sec},
            "rollout": {"kv_cache": True, "horizon": HORIZON, "sec": best,
                        "batch_latent_steps_per_sec": RB * HORIZON / best,
                        "call": "generate(use_time_cache=True, num_steps=4, prompt_latents=context)"},
            "matmul_fp32_gflops": {"before": mm, "after": matmul_gflops(), "size": 1024}}


def ours_command(python: str, train_steps: int, flags: list[str]) -> list[str]:
    return [python, str(REPO / "bench" / "bench_dynamics.py"), "--batch", str(B), "--time", str(T), "--tokens", str(N),
            "--channels", str(C), "--cards", str(CARDS), "--chunk", "1", "--steps", str(train_steps),
            "--context", str(CONTEXT), "--horizons", str(HORIZON), "--rollout-batch", str(RB), *flags,
            "--no-uncached", "--cfg", *OURS_CFG]


def ours_side(python: str, train_steps: int, flags: list[str], env: dict) -> dict:
    cmd = ours_command(python, train_steps, flags)
    out = subprocess.run(cmd, check=False, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(f"ours failed ({' '.join(cmd)}):\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout)
    ro = r["rollout"][f"h{HORIZON}"]["kv_cache"]
    tr = r["train"]
    return {"side": "ours", "torch": r["torch"], "threads": r["threads"], "flags": flags, "command": " ".join(cmd),
            "config": r["config"], "params": tr["params"], "model_flops_per_step": tr["model_flops_per_step"],
            "measured_bootstrap_step_frac": tr["measured_bootstrap_step_frac"],
            "train": {"steps": train_steps, "sec_per_step": tr["sec_per_step"],
                      "latent_tokens_per_sec": tr["latent_tokens_per_sec"]},
            "rollout": {"kv_cache": True, "horizon": HORIZON, "sec": ro["sec"],
                        "batch_latent_steps_per_sec": ro["batch_latent_steps_per_sec"]},
            "compile_and_warmup_sec": tr["warmup_sec"],
            "matmul_fp32_gflops": r["matmul_fp32_gflops"]}


def peer_run(venv: str, train_steps: int, peer_args: dict, env: dict) -> dict:
    cmd = [venv_python(venv), str(Path(__file__).resolve()), "--side", "peer", "--train-steps", str(train_steps),
           "--peer-args", json.dumps(peer_args)]
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}  # nothing of this project in the peer's process
    out = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"peer failed ({' '.join(cmd)}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(rounds: list[dict], flops: float) -> dict:
    def frac(s):  # achieved GFLOP/s over this subprocess's measured fp32 matmul peak, our analytic FLOPs
        mm = s["matmul_fp32_gflops"]
        return flops / s["train"]["sec_per_step"] / 1e9 / max(mm["before"], mm["after"])

    figures = {"train_latent_tokens_per_sec": lambda s: s["train"]["latent_tokens_per_sec"],
               "imagined_latent_steps_per_sec_kv_cache": lambda s: s["rollout"]["batch_latent_steps_per_sec"],
               "fraction_of_matmul_peak": frac}
    out = {}
    for name, get in figures.items():
        per = {side: [get(r[side]) for r in rounds] for side in ("ours", "peer")}
        med = {side: statistics.median(v) for side, v in per.items()}
        out[name] = {"ratio_ours_over_peer": med["ours"] / med["peer"], "median": med, "rounds": per}
    return out


def table(summary: dict) -> str:
    rows = [f"{'figure':40s} {'ours':>10s} {'peer':>10s} {'ours/peer':>9s}   rounds ours | peer"]
    for name, f in summary.items():
        fmt = (lambda v: f"{v:.3f}") if name.startswith("fraction") else (lambda v: f"{v:.1f}")
        rows.append(f"{name:40s} {fmt(f['median']['ours']):>10s} {fmt(f['median']['peer']):>10s} "
                    f"{f['ratio_ours_over_peer']:>9.2f}   {' '.join(map(fmt, f['rounds']['ours']))} | "
                    f"{' '.join(map(fmt, f['rounds']['peer']))}")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (ours, peer) per run")
    p.add_argument("--train-steps", type=int, default=10, help="timed training steps per subprocess (after 2 warm-up)")
    p.add_argument("--venv", default="/tmp/dreamer_peer_venv", help="the peer's scratch venv")
    p.add_argument("--install", action="store_true", help="build / top up the peer's venv, then exit")
    p.add_argument("--ours-flags", default="--bf16 --compile", help="extra flags for bench/bench_dynamics.py (one flag alone: --ours-flags=--bf16)")
    p.add_argument("--ours-python", default=str(REPO / ".venv" / "bin" / "python"))
    p.add_argument("--peer-args", default=None, help="JSON dict merged into the peer's constructor args")
    p.add_argument("--json", help="also write the JSON result here")
    p.add_argument("--side", choices=["ours", "peer"], help="run one side in this process, print one JSON line")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="bench_peer: %(message)s")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the Makefile; read by OpenMP at torch import, and
    os.environ.setdefault("GOMP_SPINCOUNT", "20000")  # inherited by both sides' subprocesses
    peer_args = {**PEER_ARGS, **json.loads(args.peer_args or "{}")}
    ours_flags = args.ours_flags.split()
    if args.side == "peer":
        print(json.dumps(peer_side(args.train_steps, peer_args)))
        return
    if args.side == "ours":
        print(json.dumps(ours_side(args.ours_python, args.train_steps, ours_flags, dict(os.environ))))
        return
    if args.install:
        install(args.venv)
        return
    if not Path(venv_python(args.venv)).exists():
        raise SystemExit(f"no peer venv at {args.venv}: run `python bench/bench_peer.py --install --venv {args.venv}`")
    log.info("note: %s", SHIM_NOTE)
    env = dict(os.environ)
    rounds, t_start = [], time.perf_counter()
    for i in range(args.rounds):
        ours = ours_side(args.ours_python, args.train_steps, ours_flags, env)
        log.info("round %d ours: %.1f tokens/s, %.2f imagined steps/s", i + 1, ours["train"]["latent_tokens_per_sec"],
                 ours["rollout"]["batch_latent_steps_per_sec"])
        peer = peer_run(args.venv, args.train_steps, peer_args, env)
        log.info("round %d peer: %.1f tokens/s, %.2f imagined steps/s", i + 1, peer["train"]["latent_tokens_per_sec"],
                 peer["rollout"]["batch_latent_steps_per_sec"])
        rounds.append({"ours": ours, "peer": peer})
    if any(r["ours"]["torch"] != r["peer"]["torch"] for r in rounds):
        log.warning("the two sides ran different torch versions: %s", {r["ours"]["torch"] for r in rounds}
                    | {r["peer"]["torch"] for r in rounds})
    flops = rounds[0]["ours"]["model_flops_per_step"]
    summary = summarise(rounds, flops)
    last = rounds[-1]
    result = {
        "figures": summary,
        "shapes": {"batch": B, "time": T, "N": N, "C": C, "cards": [CARDS], "chunk_S": 1, "rollout_batch": RB,
                   "context": CONTEXT, "horizon": HORIZON, "sample_steps": SAMPLE_STEPS},
        "ours": {"flags": ours_flags, "command": last["ours"]["command"], "config": last["ours"]["config"],
                 "params": last["ours"]["params"], "torch": last["ours"]["torch"], "threads": last["ours"]["threads"]},
        "peer": {k: last["peer"][k] for k in ("versions", "constructor_args", "forward_args", "optimiser", "params",
                                               "params_with_grad", "transformer_calls", "torch", "threads")}
                | {"flags": [], "venv": args.venv, "rollout_call": last["peer"]["rollout"]["call"]},
        "same_torch": last["ours"]["torch"] == last["peer"]["torch"],
        "flops_method": "ours' analytic bench_dynamics.forward_flops_per_step count for BOTH sides (same shapes): "
                        f"{flops:.4g} FLOP per training step (3x fwd + 2 teacher fwd, every row bootstrapped); "
                        "the peer's extra modules are not counted. Peak = fp32 1024^3 matmul GFLOP/s measured in "
                        "each subprocess before and after its work (the larger)",
        "alternation": f"{args.rounds} rounds of (ours, peer), each side a fresh subprocess with its own warm-up",
        "notes": [SHIM_NOTE, "train: 2 warm-up + --train-steps timed steps; imagination: best of 2 generations"],
        "raw_rounds": [{side: {k: r[side][k] for k in ("train", "rollout", "matmul_fp32_gflops",
                                                        "compile_and_warmup_sec") if k in r[side]} for side in r}
                       for r in rounds],
        "wall_s": time.perf_counter() - t_start,
    }
    print(json.dumps(result, indent=1))
    print(table(summary), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
