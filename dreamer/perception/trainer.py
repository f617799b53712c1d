"""Training and evaluation of the perception head, and the with/without-world-tokens ablation.

Accuracy is exact match of the answer under teacher forcing (greedy next-token predictions equal
every answer token and the end token), which is what greedy decoding would produce.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from dreamer.training.gradmode import ensure_grad_enabled

from .data import Example, PromptFormat, answer_correct, collate, encode_record
from .fusion import GemmaWorldFusion

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    window: int = 4  # latent steps of world context per question (the last one is the asked-about step)
    steps: int = 400
    batch_size: int = 16
    lr: float = 1e-3  # projector (and vision tower when trained)
    lm_lr: float = 1e-5  # language model, when it trains
    warmup: int = 20
    grad_clip: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast on CUDA; fp16 adds a GradScaler)
    device: str = "cpu"
    seed: int = 0
    eval_batch_size: int = 16  # logits are (B, L, vocab): keep it small for Gemma's 262k vocabulary
    log_every: int = 50

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"TrainConfig.precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.window < 1 or self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"bad TrainConfig: window={self.window}, steps={self.steps}, batch={self.batch_size}")


def _autocast(cfg: TrainConfig, device: torch.device):
    enabled = device.type == "cuda" and cfg.precision != "fp32"
    dtype = torch.float16 if cfg.precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def train_head(model: GemmaWorldFusion, examples: list[Example], cfg: TrainConfig, pad_id: int) -> list[float]:
    """AdamW on the model's trainable parameters; returns the loss per step."""
    ensure_grad_enabled("the start of training")
    device = torch.device(cfg.device)
    if device.type != "cuda" and cfg.precision != "fp32":
        logger.warning("precision %s needs CUDA; training in fp32 on %s", cfg.precision, device)
    lm = {id(p) for m in (model.gemma.model.language_model, model.gemma.lm_head) for p in m.parameters()}
    params = model.trainable_parameters()
    groups = [{"params": [p for p in params if id(p) not in lm], "lr": cfg.lr},
              {"params": [p for p in params if id(p) in lm], "lr": cfg.lm_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.precision == "fp16")
    rng = np.random.default_rng(cfg.seed)
    model.train()
    losses = []
    t0 = time.time()
    for step in range(cfg.steps):
        idx = rng.choice(len(examples), size=min(cfg.batch_size, len(examples)), replace=False)
        batch = _to(collate([examples[i] for i in idx], pad_id), device)
        with _autocast(cfg, device):
            out = model(**batch)
        scaler.scale(out.loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()
        losses.append(float(out.loss.detach()))
        if cfg.log_every and (step + 1) % cfg.log_every == 0:
            logger.info("step %d/%d loss %.4f (%.1fs)", step + 1, cfg.steps,
                        float(np.mean(losses[-cfg.log_every:])), time.time() - t0)
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model: GemmaWorldFusion, examples: list[Example], cfg: TrainConfig, pad_id: int,
             shuffle_world: bool = False) -> dict:
    """Exact-match accuracy overall and per question kind. ``shuffle_world`` gives every record the world
    latents of a random other record of the set (a control: the right question about another moment)."""
    device = torch.device(cfg.device)
    model.eval()
    if shuffle_world:
        perm = np.random.default_rng(cfg.seed + 1).permutation(len(examples))
        examples = [replace(e, world_tnc=examples[j].world_tnc) for e, j in zip(examples, perm)]
    hits: dict[str, list[bool]] = defaultdict(list)
    for s in range(0, len(examples), cfg.eval_batch_size):
        chunk = examples[s:s + cfg.eval_batch_size]
        batch = _to(collate(chunk, pad_id), device)
        with _autocast(cfg, device):
            out, sp = model.forward_spliced(**batch)
        for e, ok in zip(chunk, answer_correct(out.logits, sp.labels).tolist()):
            hits[e.record.get("kind", "all")].append(ok)
    every = [h for v in hits.values() for h in v]
    return {"accuracy": float(np.mean(every)) if every else float("nan"), "n": len(every),
            "per_kind": {k: float(np.mean(v)) for k, v in sorted(hits.items())}}


def majority_baseline(train_records: list[dict], eval_records: list[dict]) -> dict:
    """Accuracy of answering each question with its most frequent training answer."""
    by_q: dict[str, Counter] = defaultdict(Counter)
    for r in train_records:
        by_q[r["prompt"]][r["answer"]] += 1
    hits: dict[str, list[bool]] = defaultdict(list)
    for r in eval_records:
        guess = by_q[r["prompt"]].most_common(1)[0][0] if by_q[r["prompt"]] else None
        hits[r.get("kind", "all")].append(guess == r["answer"])
    every = [h for v in hits.values() for h in v]
    return {"accuracy": float(np.mean(every)) if every else float("nan"), "n": len(every),
            "per_kind": {k: float(np.mean(v)) for k, v in sorted(hits.items())}}


@torch.no_grad()
def sample_answers(model: GemmaWorldFusion, records: list[dict], latents: dict[str, np.ndarray],
                   window: int, n: int = 3, device: str = "cpu") -> list[dict]:
    """Greedy generations for a few records (prompt only, with world tokens), decoded to text."""
    tok, fmt = model.tokenizer, PromptFormat(model.cfg.start_token, model.cfg.end_token)
    out = []
    for r in records[:n]:
        ex = encode_record(tok, dict(r, answer=""), fmt, True, latents.get(r["episode"]), window)
        n_prompt = sum(1 for x in ex.labels if x == -100)
        ids = torch.tensor([ex.input_ids[:n_prompt]], device=device)
        world = torch.from_numpy(ex.world_tnc[None]).to(device)
        gen = model.generate(ids, world_latents=world, max_new_tokens=16,
                             eos_token_id=tok.convert_tokens_to_ids(fmt.answer_end(tok)))
        out.append({"episode": r["episode"], "step": r["step"], "prompt": r["prompt"], "answer": r["answer"],
                    "generated": tok.decode(gen[0], skip_special_tokens=True).strip()})
    return out


def run_ablation(model: GemmaWorldFusion, train_records: list[dict], eval_records: list[dict],
                 latents: dict[str, np.ndarray], cfg: TrainConfig, out_dir: str | Path | None = None) -> dict:
    """Train/evaluate with world tokens, then from the same start without them. Returns the report."""
    tok = model.tokenizer
    if tok is None:
        raise ValueError("training from text records needs a tokenizer (none was loaded with the model)")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    fmt = PromptFormat(model.cfg.start_token, model.cfg.end_token)

    def enc(recs: list[dict], with_world: bool) -> list[Example]:
        return [encode_record(tok, r, fmt, with_world, latents.get(r["episode"]), cfg.window) for r in recs]

    t0 = time.time()
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    report: dict = {"train_config": asdict(cfg), "n_train_records": len(train_records),
                    "n_eval_records": len(eval_records),
                    "majority_baseline": majority_baseline(train_records, eval_records)}
    train_w, eval_w = enc(train_records, True), enc(eval_records, True)
    before = evaluate(model, eval_w, cfg, pad_id)
    losses = train_head(model, train_w, cfg, pad_id)
    report["with_world"] = evaluate(model, eval_w, cfg, pad_id)
    report["with_world_shuffled"] = evaluate(model, eval_w, cfg, pad_id, shuffle_world=True)
    report["with_world_before_training"] = before
    report["loss_with_world"] = _loss_summary(losses)
    report["samples"] = sample_answers(model, eval_records, latents, cfg.window, device=cfg.device)
    if out_dir is not None:
        model.save_pretrained(Path(out_dir) / "with_world")
    with torch.no_grad():  # restore the common starting point for the text-only arm
        for n, p in model.named_parameters():
            if n in start:
                p.copy_(start[n])
    proj = {id(p) for p in model.projector.parameters()}
    if any(id(p) not in proj for p in model.trainable_parameters()):
        losses = train_head(model, enc(train_records, False), cfg, pad_id)
        report["loss_text_only"] = _loss_summary(losses)
    else:
        logger.info("text-only arm: only the projector trains, so it has nothing to learn; evaluating as is")
    report["text_only"] = evaluate(model, enc(eval_records, False), cfg, pad_id)
    report["seconds"] = round(time.time() - t0, 1)
    logger.info("accuracy with world tokens %.3f, without %.3f, shuffled world %.3f, majority %.3f",
                report["with_world"]["accuracy"], report["text_only"]["accuracy"],
                report["with_world_shuffled"]["accuracy"], report["majority_baseline"]["accuracy"])
    return report


def _loss_summary(losses: list[float]) -> dict:
    k = max(1, min(20, len(losses) // 5))
    return {"first": float(np.mean(losses[:k])) if losses else None,
            "last": float(np.mean(losses[-k:])) if losses else None, "steps": len(losses)}
