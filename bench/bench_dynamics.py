"""Benchmark of the phase-1 dynamics model: training throughput and rollout speed.  Prints JSON.

Training throughput is in latent tokens (B*T*N per step) per second, also expressed as achieved model
GFLOP/s and as a fraction of this machine's fp32 matmul GFLOP/s measured in the same run.  Model FLOPs
are estimated ANALYTICALLY: matmuls (projections, SwiGLU, in/out layers) and attention scores
(QK^T and AV; causal time attention counts only the visible keys); embeddings, norms, softmax and other
elementwise work are ignored.  A train step = student forward + backward (3x forward) + two no-grad
teacher forwards on the bootstrap rows (expected count).

`--bf16` runs both under bf16 autocast (phase*.bf16), `--compile` torch.compiles the trained model and the KV-cached
rollout step (phase1.compile, phase3.compile); the compile time is in `train.warmup_sec` and not in the rates.

Usage: OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. python bench/bench_dynamics.py [--batch 8 --time 16 ...] [--bf16 --compile]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from cpu_peak import matmul_gflops, threads  # bench/ is the script's folder

from dreamer.dynamics import DynamicsConfig, DynamicsModel, ShortcutForcingLoss, rollout


def forward_flops_per_step(cfg: DynamicsConfig, n: int, c: int, t: int) -> float:
    """Analytic FLOPs of one forward for ONE latent step of a length-t sequence (all L slots)."""
    d, h = cfg.d_model, cfg.mlp_hidden
    dkv = cfg.num_kv_heads * (d // cfg.num_heads)
    slots = n + cfg.num_registers + 2
    f = 2 * n * c * d + 2 * (2 * d) * d + 2 * n * d * c  # latent in, shortcut proj, latent out
    for i in range(cfg.num_layers):
        f += slots * (2 * d * d + 2 * d * 2 * dkv + 2 * d * d + 6 * d * h)  # q, kv, o, SwiGLU
        keys = (t + 1) / 2 if cfg.is_time_layer(i) else slots  # mean visible keys per query
        f += slots * 4 * keys * d  # QK^T and AV
    return f


def bench_train(cfg, b, t, n, c, cards, s, steps, device, bf16: bool = False, compile: bool = False) -> dict:
    model = DynamicsModel(cfg, n, c, cards, s).to(device)
    net = torch.compile(model) if compile else model  # as phase1.compile (dreamer.training.runtime.wrap_model)
    loss_fn = ShortcutForcingLoss(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(b, t, n, c, device=device)
    acts = torch.stack([torch.randint(0, k, (b, t, s), device=device) for k in cards], -1)
    mask = torch.ones(b, t, s, dtype=torch.bool, device=device)
    boot_rows = []

    def one():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            loss, met = loss_fn(net, z, acts, mask, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        boot_rows.append(met["bootstrap_frac"])

    t0 = time.perf_counter()
    for _ in range(4 if compile else 2):  # compiled: the student, the teacher and its symbolic-rows recompile
        one()
    warmup = time.perf_counter() - t0
    boot_rows.clear()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    dt = (time.perf_counter() - t0) / steps
    frac = cfg.bootstrap_fraction if cfg.bootstrap_fraction is not None else 1.0  # rows with any d > d_min
    fwd = forward_flops_per_step(cfg, n, c, t) * b * t
    train_flops = fwd * (3 + 2 * frac)
    return {"params": sum(p.numel() for p in model.parameters()), "sec_per_step": dt, "warmup_sec": warmup,
            "latent_tokens_per_sec": b * t * n / dt, "model_flops_per_step": train_flops,
            "model_flops_per_latent_token": train_flops / (b * t * n), "achieved_gflops": train_flops / dt / 1e9,
            "measured_bootstrap_step_frac": sum(boot_rows) / len(boot_rows), "_model": model}


def bench_rollout(model, b, context, horizons, device, reps: int = 2, bf16: bool = False, compile: bool = False,
                  uncached: bool = True) -> dict:
    n, c, s, d = model.num_tokens, model.latent_dim, model.chunk_len, len(model.action_cards)
    # as phase3.compile: the KV-cached step compiled with symbolic sizes (train_phase3.py)
    step = torch.compile(model.forward_into, dynamic=True) if compile else None
    out = {}
    for h in horizons:
        z = torch.randn(b, context, n, c, device=device)
        acts = torch.zeros(b, context + h, s, d, dtype=torch.long, device=device)
        mask = torch.ones(b, context + h, s, dtype=torch.bool, device=device)
        row = {}
        for cached in (True, False) if uncached else (True,):
            best = float("inf")
            # the uncached reference path is slow: time it once; compiled, the first rollout compiles
            for _ in range((reps + int(compile)) if cached else 1):
                t0 = time.perf_counter()
                with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                    rollout(model, z, acts[:, :context], mask[:, :context], acts[:, context - 1:context - 1 + h],
                            mask[:, context - 1:context - 1 + h], use_kv_cache=cached,
                            generator=torch.Generator(device=device).manual_seed(0),
                            forward_into=step if cached else None)
                best = min(best, time.perf_counter() - t0)
            key = "kv_cache" if cached else "no_cache"
            row[key] = {"sec": best, "latent_steps_per_sec": h / best, "batch_latent_steps_per_sec": b * h / best}
        if uncached:
            row["speedup"] = row["no_cache"]["sec"] / row["kv_cache"]["sec"]
        out[f"h{h}"] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--time", type=int, default=16)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--cards", type=int, nargs="+", default=[17])
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--context", type=int, default=8)
    p.add_argument("--horizons", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--rollout-batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cfg", nargs="*", default=[], help="DynamicsConfig overrides key=value")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (as phase1.bf16 / phase3.bf16)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training step's model and the KV-cached rollout step (as phase1/3.compile)")
    p.add_argument("--no-uncached", action="store_true", help="skip the slow uncached rollout reference")
    args = p.parse_args()
    over = {}
    for kv in args.cfg:
        k, v = kv.split("=", 1)
        over[k] = json.loads(v) if v not in ("None",) else None
    cfg = DynamicsConfig(**over)
    torch.manual_seed(0)
    mm = matmul_gflops()
    tr = bench_train(cfg, args.batch, args.time, args.tokens, args.channels, args.cards, args.chunk, args.steps,
                     args.device, args.bf16, args.compile)
    model = tr.pop("_model")
    ro = bench_rollout(model, args.rollout_batch, args.context, args.horizons, args.device, bf16=args.bf16,
                       compile=args.compile, uncached=not args.no_uncached)
    mm_after = matmul_gflops()
    peak = max(mm, mm_after)
    mm_bf16 = matmul_gflops(dtype=torch.bfloat16) if args.bf16 else None
    result = {
        "config": cfg.to_dict(),
        "shapes": {"batch": args.batch, "time": args.time, "N": args.tokens, "C": args.channels,
                   "cards": args.cards, "S": args.chunk, "rollout_batch": args.rollout_batch,
                   "context": args.context},
        "threads": threads(),
        "device": args.device, "torch": torch.__version__, "bf16": args.bf16, "compile": args.compile,
        "matmul_fp32_gflops": {"before": mm, "after": mm_after, "size": 1024},
        "matmul_bf16_gflops": mm_bf16,
        "flops_method": "analytic: matmuls + attention QK^T/AV (causal: visible keys only); "
                        "train = 3x fwd + 2 teacher fwd on expected bootstrap rows",
        # the fp32 peak is the denominator either way; under --bf16 also the bf16 matmul peak (about 3x here)
        "train": {**tr, "fraction_of_matmul_peak": tr["achieved_gflops"] / peak,
                  **({"fraction_of_bf16_matmul_peak": tr["achieved_gflops"] / mm_bf16} if mm_bf16 else {})},
        "rollout": {"sample_steps": cfg.sample_steps, **ro},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
