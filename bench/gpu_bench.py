"""GPU benchmark of the pipeline's hot paths; prints one JSON document (the second half of `make gpu-check`).

    python bench/gpu_bench.py [--out FILE] [--budget-s 200]     # on a CUDA GPU, about two minutes on one H200
    python bench/gpu_bench.py --device cpu --tiny               # the same code on the CPU with toy sizes, seconds

Sections, in this order (each records its wall time and its peak device memory; one that fails records its error,
one that would start after --budget-s is recorded as skipped):
  matmul_peak     dense bf16 n x n matmul TFLOP/s, mean over timed reps after warm-up, measured at the start and
                  at the end: the larger is the MFU denominator (the card's measured peak, not its datasheet's)
  dynamics_train  phase-1 steps as train_phase1_cosmos.py runs them (ShortcutForcingLoss, bf16 autocast,
                  optimizer_step: AdamW, clipping, the non-finite guard) on a batch already on the device, for
                  the small dynamics (configs/crafter_cosmos.yaml) and a large one: latent tokens/s (B*T*N per
                  second, the figure phase 1 logs), model TFLOP/s from the analytic count of bench_dynamics.py
                  (3 x forward for forward + backward, plus the no-grad teacher forwards of the bootstrap rows), MFU
  imagination     phase 3's imagine() under bf16 autocast (KV-cached shortcut sampling of the frozen dynamics,
                  policy samples, trunk features, reward and continue heads) for the same two dynamics: imagined
                  latent steps/s, and env frames/s (each latent step stands for S env frames); for the small model
                  also the uncached path, for the speed-up
  tokenizer       CV8x8x8 (random weights, bf16 autocast): encode of windows of 1 + S*m frames of 64x64 upsampled
                  to 256x256 (the cache builder's path), and decode of the pooled latents back to 256x256 frames;
                  frames/s each. Imagination's frames/s including the decode of every imagined frame to pixels is
                  derived from the two measured rates (phase 3 itself never decodes; pictures only)
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch
from bench_dynamics import forward_flops_per_step  # bench/ is the script's folder

from dreamer.agent import Agent
from dreamer.config import load
from dreamer.dynamics import DynamicsModel, ShortcutForcingLoss
from dreamer.imagination import imagine
from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig
from dreamer.training.optim import NonFiniteGuard, make_optimizer, make_scheduler, optimizer_step
from dreamer.training.runtime import Runtime, wrap_model

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "crafter_cosmos.yaml"
CARDS = [17]  # Crafter's action space
GIB = 2**30

# Sizes. "small" is configs/crafter_cosmos.yaml's dynamics, "large" the same with d_model 2048 x 24 layers (~1.1B
# parameters); --tiny shrinks everything so that the CPU runs the same code in seconds.
LARGE = {"d_model": 2048, "num_layers": 24, "num_heads": 16, "num_kv_heads": 4}
TINY = {"d_model": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "num_registers": 1, "max_time": 16,
        "k_max": 8, "sample_steps": 2}
TINY_LARGE = {**TINY, "d_model": 64, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2}
TINY_AGENT = {"d_model": 32, "num_layers": 1, "num_heads": 2, "max_time": 16, "mlp_hidden": 64, "head_hidden": 32}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def seconds_per_call(fn, dev: torch.device, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(dev)
    return (time.perf_counter() - t0) / reps


def params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def shape(dyn_cfg) -> dict:
    """The dynamics' architecture in brief (the rest of its config is configs/crafter_cosmos.yaml's)."""
    keys = ("d_model", "num_layers", "num_heads", "num_kv_heads", "num_registers", "k_max", "sample_steps")
    return {k: getattr(dyn_cfg, k) for k in keys}


def matmul_peak(dev: torch.device, n: int, reps: int) -> dict:
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    sec = seconds_per_call(lambda: a @ b, dev, 3, reps)
    return {"n": n, "dtype": "bfloat16", "reps": reps, "tflops": 2 * n**3 / sec / 1e12}


def random_batch(dev, b: int, t: int, n: int, c: int, s: int) -> dict:
    g = torch.Generator(device=dev).manual_seed(0)
    return {"latents": torch.randn(b, t, n, c, device=dev, generator=g),
            "actions": torch.stack([torch.randint(0, k, (b, t, s), device=dev, generator=g) for k in CARDS], -1),
            "action_mask": torch.ones(b, t, s, dtype=torch.bool, device=dev)}


def dynamics_train(cfg, dyn_cfg, b: int, t: int, n: int, c: int, s: int, steps: int, peak_tflops: float,
                   compile: bool) -> dict:
    rt = Runtime(cfg=cfg, device=DEV)
    with torch.device(DEV):  # parameters are created on the device (a 1B model initialises in milliseconds)
        model = DynamicsModel(dyn_cfg, n, c, CARDS, s)
    loss_fn = ShortcutForcingLoss(dyn_cfg).to(DEV)
    pc = cfg.phase1
    opt = make_optimizer(model.parameters(), pc)
    sched = make_scheduler(opt, pc)
    guard = NonFiniteGuard(pc.max_nonfinite)
    net = wrap_model(rt, model, compile)
    batch = random_batch(DEV, b, t, n, c, s)
    gen = torch.Generator(device=DEV).manual_seed(1)
    fracs: list[float] = []

    def step():
        with rt.autocast(True):
            loss, m = loss_fn(net, batch["latents"], batch["actions"], batch["action_mask"], generator=gen)
        optimizer_step(opt, sched, loss, pc, guard, len(fracs))
        fracs.append(m["bootstrap_frac"])

    sec = seconds_per_call(step, DEV, 2 + 2 * compile, steps)
    boot = sum(fracs[-steps:]) / steps  # the share of rows with teacher passes
    flops = forward_flops_per_step(dyn_cfg, n, c, t) * b * t * (3 + 2 * boot)
    out = {"params": params(model), "config": shape(dyn_cfg), "batch": b, "time": t, "tokens": n,
           "channels": c, "compiled": bool(compile and DEV.type == "cuda"), "sec_per_step": sec,
           "latent_tokens_per_s": b * t * n / sec, "bootstrap_row_fraction": boot, "model_tflop_per_step": flops / 1e12,
           "model_tflops": flops / sec / 1e12, "mfu": flops / sec / 1e12 / peak_tflops, "skipped_steps": guard.total}
    return out


def imagination(cfg, dyn_cfg, agent_kw: dict, b: int, context: int, horizon: int, n: int, c: int, s: int, reps: int,
                uncached: bool) -> dict:
    rt = Runtime(cfg=cfg, device=DEV)
    with torch.device(DEV):
        dynamics = DynamicsModel(dyn_cfg, n, c, CARDS, s).requires_grad_(False).eval()
        agent = Agent(dataclasses.replace(cfg.agent, **agent_kw), n, c, CARDS, s)
    agent.freeze_for_phase3()
    agent.eval()
    batch = random_batch(DEV, b, context, n, c, s)
    gen = torch.Generator(device=DEV).manual_seed(2)
    out = {"dynamics_params": params(dynamics), "agent_params": params(agent), "dynamics_config": shape(dyn_cfg),
           "batch": b, "context": context, "horizon": horizon, "sample_steps": dyn_cfg.sample_steps, "S": s}
    for cached in (True, False) if uncached else (True,):
        def run(cached=cached):
            with rt.autocast(True):
                imagine(dynamics, agent, batch, horizon, gen, use_kv_cache=cached)

        sec = seconds_per_call(run, DEV, 1, reps)
        key = "kv_cache" if cached else "no_cache"
        out[key] = {"sec_per_rollout": sec, "latent_steps_per_s": b * horizon / sec, "env_frames_per_s": b * horizon * s / sec}
    if uncached:
        out["kv_cache_speedup"] = out["no_cache"]["sec_per_rollout"] / out["kv_cache"]["sec_per_rollout"]
    return out


def tokenizer(tok_cfg: TokenizerConfig, windows: int, frame_size: int, reps: int) -> dict:
    tok = CosmosTokenizerWrapper(cfg=tok_cfg).to(DEV)
    frames_per_window = 1 + tok.S * tok_cfg.window_latents
    g = torch.Generator(device=DEV).manual_seed(3)
    frames = torch.randint(0, 256, (windows, frames_per_window, frame_size, frame_size, 3), device=DEV,
                           dtype=torch.uint8, generator=g)
    enc = seconds_per_call(lambda: tok.encode_clip(frames), DEV, 1, reps)
    z = tok.encode_clip(frames)
    dec_frames = windows * (1 + tok.S * (z.shape[1] - 1))
    dec = seconds_per_call(lambda: tok.decode(z), DEV, 1, reps)
    out = {"preset": tok_cfg.preset, "params": params(tok), "weights": "random", "bf16": tok_cfg.bf16,
           "resolution": tok_cfg.resolution, "input_frame_size": frame_size, "windows_per_call": windows,
           "frames_per_window": frames_per_window, "latents": list(z.shape), "S": tok.S,
           "encode": {"sec_per_call": enc, "frames_per_s": windows * frames_per_window / enc},
           "decode": {"sec_per_call": dec, "frames_per_s": dec_frames / dec}}
    return out


def device_info() -> dict:
    info = {"device": str(DEV), "torch": torch.__version__, "python": platform.python_version(),
            "cuda_build": torch.version.cuda}
    if DEV.type == "cuda":
        p = torch.cuda.get_device_properties(DEV)
        info.update(name=p.name, capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                    memory_gib=p.total_memory / GIB)
    else:
        info.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return info


def peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated(DEV) / GIB if DEV.type == "cuda" else None


def run_section(result: dict, key: str, fn, deadline: float) -> None:
    """Run one section into result[a][b] (key "a.b"), recording wall time and peak memory, or why it did not run."""
    *parents, leaf = key.split(".")
    slot = result
    for p in parents:
        slot = slot.setdefault(p, {})
    if time.perf_counter() > deadline:
        slot[leaf] = {"skipped": "the time budget (--budget-s) was spent before this section"}
        return
    if DEV.type == "cuda":
        torch.cuda.reset_peak_memory_stats(DEV)
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001  (a failing section, e.g. out of memory, must not hide the others)
        traceback.print_exc()
        out = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        result.setdefault("errors", []).append(f"{key}: {out['error']}")
    out["wall_s"] = time.perf_counter() - t0
    out["peak_memory_gib"] = peak_gib()
    slot[leaf] = out
    gc.collect()
    if DEV.type == "cuda":
        torch.cuda.empty_cache()
    print(f"gpu_bench: {key} done in {out['wall_s']:.1f} s", file=sys.stderr, flush=True)


def main(argv=None) -> dict:
    global DEV
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="toy sizes: the code path in seconds (CPU tests)")
    p.add_argument("--budget-s", type=float, default=200.0, help="no section starts after this many seconds")
    p.add_argument("--compile", action="store_true", help="also time phase-1 training with torch.compile (CUDA)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    DEV = torch.device(args.device)
    if DEV.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"gpu_bench: --device {args.device} but torch {torch.__version__} sees no CUDA GPU; "
                 "use --device cpu --tiny to run the code path on the CPU")
    if DEV.type == "cuda" and DEV.index is None:
        DEV = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(0)
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    cfg = load([str(PRESET)], ["device=" + str(DEV)])
    tiny = args.tiny
    small = dataclasses.replace(cfg.dynamics, **TINY) if tiny else cfg.dynamics
    large = dataclasses.replace(cfg.dynamics, **(TINY_LARGE if tiny else LARGE))
    agent_kw = TINY_AGENT if tiny else {}
    n, c, s = 16, 16, 8  # crafter_cosmos: 4x4 pooled tokens of 16 channels, S = 8 frames per latent
    t = 8 if tiny else cfg.data.clip_len
    p3 = cfg.phase3
    mm_n, mm_reps, steps, reps = (256, 3, 2, 1) if tiny else (8192, 20, 8, 3)
    tok_cfg = (TokenizerConfig(preset="tiny", resolution=64, pool=2, window_latents=1, bf16=True) if tiny
               else dataclasses.replace(cfg.tokenizer, bf16=True))
    result: dict = {"benchmark": "gpu_bench", "tiny": tiny, "device": device_info(),
                    "preset": str(PRESET.relative_to(ROOT)), "autocast": "bf16"}
    run_section(result, "matmul_peak.start", lambda: matmul_peak(DEV, mm_n, mm_reps), deadline)
    peak = result["matmul_peak"]["start"].get("tflops") or float("nan")
    run_section(result, "dynamics_train.small",
                lambda: dynamics_train(cfg, small, 4 if tiny else cfg.phase1.batch_size, t, n, c, s, steps, peak, False),
                deadline)
    run_section(result, "dynamics_train.large",
                lambda: dynamics_train(cfg, large, 2 if tiny else 8, t, n, c, s, steps, peak, False), deadline)
    if args.compile:
        run_section(result, "dynamics_train.small_compiled",
                    lambda: dynamics_train(cfg, small, 4 if tiny else cfg.phase1.batch_size, t, n, c, s, steps, peak,
                                           True), deadline)
    ctx, horizon, b3 = (2, 3, 2) if tiny else (p3.context, p3.horizon, p3.batch_size)
    run_section(result, "imagination.small",
                lambda: imagination(cfg, small, agent_kw, b3, ctx, horizon, n, c, s, reps, uncached=True), deadline)
    run_section(result, "imagination.large",
                lambda: imagination(cfg, large, agent_kw, b3, ctx, horizon, n, c, s, reps, uncached=False), deadline)
    run_section(result, "tokenizer.cv8x8x8" if not tiny else "tokenizer.tiny",
                lambda: tokenizer(tok_cfg, 2 if tiny else cfg.tokenizer.batch_windows, cfg.env.size, reps), deadline)
    run_section(result, "matmul_peak.end", lambda: matmul_peak(DEV, mm_n, mm_reps), deadline)

    mm = result["matmul_peak"]
    best = max(v.get("tflops", 0.0) for v in mm.values() if isinstance(v, dict))
    mm["peak_tflops"] = best
    for row in result.get("dynamics_train", {}).values():
        if "model_tflops" in row and best > 0:
            row["mfu"] = row["model_tflops"] / best  # against the larger of the two measurements
    tok = next(iter(result.get("tokenizer", {}).values()), {})
    decode_fps = tok.get("decode", {}).get("frames_per_s")
    for row in result.get("imagination", {}).values():
        fps = row.get("kv_cache", {}).get("env_frames_per_s")
        if fps and decode_fps:
            row["env_frames_per_s_with_decode"] = 1.0 / (1.0 / fps + 1.0 / decode_fps)  # derived, see the docstring
    result["peak_memory_gib"] = max((r.get("peak_memory_gib") or 0.0 for sec in ("dynamics_train", "imagination",
                                     "tokenizer", "matmul_peak") for r in result.get(sec, {}).values()
                                     if isinstance(r, dict)), default=0.0) if DEV.type == "cuda" else None
    result["wall_s"] = time.perf_counter() - t_start
    result["threads"] = {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if result.get("errors"):
        sys.exit(f"gpu_bench: {len(result['errors'])} section(s) failed: {result['errors']}")
    return result


DEV = torch.device("cpu")

if __name__ == "__main__":
    main()
