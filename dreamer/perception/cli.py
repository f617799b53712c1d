"""The command line of the perception head: build or read Crafter QA records, train, and report the
with/without-world-tokens ablation (the training itself is :mod:`dreamer.perception.trainer`).

    python -m dreamer.perception.cli --cache data/crafter_tiny/cache --records data/crafter_tiny/qa.jsonl \\
        --model-dir /path/to/gemma-3-4b-it --out checkpoints/perception
    python -m dreamer.perception.cli --cache data/crafter_tiny/cache --records qa.jsonl --tiny   # no weights
    python -m dreamer.perception.cli --synthetic 60 --tiny                                     # no cache either

Records are built from the cache's source episodes when the JSONL does not exist yet (or with
``--rebuild-records``). Training uses the cache's train split, accuracy its validation split
(held-out episodes). The report (JSON) goes to ``<out>/report.json`` and to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from .fusion import FusionConfig, GemmaWorldFusion
from .records import QAConfig, make_qa_records, read_records, write_records
from .synthetic import synthetic_episode, synthetic_latents
from .tiny import byte_tokenizer, tiny_gemma3
from .trainer import TrainConfig, run_ablation

logger = logging.getLogger(__name__)


def check_records(records: list[dict], latents: dict[str, np.ndarray], chunk_len: int, path: Path) -> None:
    """Refuse records that do not match the cache (unknown episode, step out of range, other chunk length)."""
    for r in records:
        lat = latents.get(r["episode"])
        if lat is None:
            raise ValueError(f"{path}: record names episode '{r['episode']}', which the cache does not hold; "
                             f"use --rebuild-records")
        k = r["step"]
        if k >= lat.shape[0] or ("frame" in r and k < lat.shape[0] - 1 and r["frame"] != chunk_len * k):
            raise ValueError(f"{path}: record (episode '{r['episode']}', step {k}, frame {r.get('frame')}) does not "
                             f"match the cache ({lat.shape[0]} latent steps, chunk length {chunk_len}); "
                             f"use --rebuild-records")


def load_cache_data(cache_dir: str, records_path: str, qa: QAConfig, rebuild: bool):
    """(records, standardised latents by episode, train names, val names) from the lead's latent cache."""
    from dreamer.data.cache import LatentCache
    from dreamer.data.episode import load_episode

    cache = LatentCache(cache_dir)
    qa.chunk_len = int(cache.chunk_len)
    mean, std = np.asarray(cache.mean, np.float32), np.asarray(cache.std, np.float32)
    latents, sources = {}, {}
    for name in cache.names:
        e = cache.episode(name)
        latents[name] = (np.asarray(e.latents, np.float32) - mean) / std
        sources[name] = e.source
    path = Path(records_path)
    if rebuild or not path.is_file():
        records = []
        for name in cache.names:
            records += make_qa_records(load_episode(sources[name]), name, qa)
        write_records(path, records)
        logger.info("wrote %d QA records for %d episodes to %s", len(records), len(cache.names), path)
    else:
        records = read_records(path)
        check_records(records, latents, qa.chunk_len, path)
    return records, latents, list(cache.train_names), list(cache.val_names)


def synthetic_data(n_episodes: int, qa: QAConfig, seed: int, val_fraction: float = 0.2,
                   tokens: int = 16, channels: int = 16):
    """Synthetic episodes and latents (see synthetic.py), standardised with train-split statistics."""
    rng = np.random.default_rng(seed)
    names = [f"syn_{i:04d}" for i in range(n_episodes)]
    eps = {n: synthetic_episode(rng) for n in names}
    raw = {n: synthetic_latents(eps[n], qa.chunk_len, tokens, channels, rng=rng).astype(np.float32) for n in names}
    n_val = max(1, round(val_fraction * n_episodes))
    train_names, val_names = names[:-n_val], names[-n_val:]
    stack = np.concatenate([raw[n].reshape(-1, channels) for n in train_names])
    mean, std = stack.mean(0), stack.std(0) + 1e-6
    latents = {n: (raw[n] - mean) / std for n in names}
    records = [r for n in names for r in make_qa_records(eps[n], n, qa)]
    return records, latents, train_names, val_names


def build_model(args, n_tokens: int, n_channels: int) -> GemmaWorldFusion:
    fcfg = FusionConfig(latent_channels=n_channels, tokens_per_step=n_tokens, max_steps=max(args.window, 8),
                        train_vision_tower=args.train_vision_tower, train_language_model=args.train_language_model)
    if args.tiny:
        torch.manual_seed(args.seed)
        return GemmaWorldFusion(tiny_gemma3(), fcfg, tokenizer=byte_tokenizer())
    dtype = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    model = GemmaWorldFusion.from_pretrained(args.model_dir, fcfg, dtype=dtype, device=args.device)
    if (model.cfg.tokens_per_step, model.cfg.latent_channels) != (n_tokens, n_channels):
        raise ValueError(f"{args.model_dir}: projector expects N={model.cfg.tokens_per_step}, "
                         f"C={model.cfg.latent_channels}; the data has N={n_tokens}, C={n_channels}")
    return model


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cache", help="latent cache folder (dreamer.data.cache.LatentCache)")
    src.add_argument("--synthetic", type=int, metavar="N", help="use N synthetic episodes instead of a cache")
    p.add_argument("--records", help="QA JSONL, built from the cache's episodes when missing "
                   "(default <out>/qa_records.jsonl)")
    p.add_argument("--rebuild-records", action="store_true")
    mdl = p.add_mutually_exclusive_group(required=True)
    mdl.add_argument("--model-dir", help="local Gemma 3 folder (or a saved fusion folder, or a hub id)")
    mdl.add_argument("--tiny", action="store_true", help="a tiny RANDOM Gemma 3 + byte tokenizer (no weights)")
    p.add_argument("--out", default="checkpoints/perception")
    p.add_argument("--train-language-model", action=argparse.BooleanOptionalAction, default=None,
                   help="also train the language model (default: on with --tiny, off otherwise)")
    p.add_argument("--train-vision-tower", action="store_true")
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lm-lr", type=float, default=None, help="default: 1e-3 with --tiny, 1e-5 otherwise")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="dtype the frozen Gemma weights are loaded in (trainable ones are kept in fp32)")
    p.add_argument("--inventory-per-step", type=int, default=1)
    p.add_argument("--death-horizon", type=int, default=2)
    p.add_argument("--chunk-len", type=int, default=8, help="S for --synthetic (a cache supplies its own)")
    p.add_argument("--max-eval", type=int, default=0, help="evaluate on at most this many records (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.train_language_model is None:
        args.train_language_model = bool(args.tiny)
    if args.lm_lr is None:
        args.lm_lr = 1e-3 if args.tiny else 1e-5
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    qa = QAConfig(chunk_len=args.chunk_len, inventory_per_step=args.inventory_per_step,
                  death_horizon=args.death_horizon, seed=args.seed)
    if args.cache:
        records_path = args.records or str(Path(args.out) / "qa_records.jsonl")
        records, latents, train_names, val_names = load_cache_data(args.cache, records_path, qa, args.rebuild_records)
    else:
        records, latents, train_names, val_names = synthetic_data(args.synthetic, qa, args.seed)
        if args.records:
            write_records(args.records, records)
    if not val_names:
        raise ValueError("no held-out episodes: the cache's validation split is empty")
    val, train = set(val_names), set(train_names)
    train_records = [r for r in records if r["episode"] in train]
    eval_records = [r for r in records if r["episode"] in val]
    if args.max_eval:
        rng = np.random.default_rng(args.seed)
        keep = rng.permutation(len(eval_records))[:args.max_eval]
        eval_records = [eval_records[i] for i in sorted(keep)]
    if not train_records or not eval_records:
        raise ValueError(f"need records on both splits, got {len(train_records)} train / {len(eval_records)} eval")
    some = next(iter(latents.values()))
    model = build_model(args, some.shape[1], some.shape[2]).to(args.device)
    cfg = TrainConfig(window=args.window, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      lm_lr=args.lm_lr, precision=args.precision, device=args.device, seed=args.seed,
                      eval_batch_size=args.eval_batch_size)
    report = run_ablation(model, train_records, eval_records, latents, cfg, out_dir=args.out)
    report.update(data=f"cache:{args.cache}" if args.cache else f"synthetic:{args.synthetic}",
                  model="tiny-random-gemma3" if args.tiny else args.model_dir,
                  train_language_model=args.train_language_model, train_episodes=len(train_names),
                  eval_episodes=len(val_names))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return report


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
