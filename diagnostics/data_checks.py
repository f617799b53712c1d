"""Checks on the data path: tokenizer output (shape, T_lat), the cache it built, the sample batch
(keys, alignment of actions with latents, finite latents with spread)."""

from __future__ import annotations

import math

import torch

from diagnostics.report import FAIL, OK, WARN, Check, verdict
from diagnostics.thresholds import Thresholds

BATCH_KEYS = ("latents", "actions", "action_mask", "rewards", "continues")
ALIGN_HINT = ("actions[:, k] is the chunk applied from latent k towards k+1, one row per latent (docs/design.md §3): "
              "cut actions, action_mask, rewards and continues with the same [start:start+T] window as the "
              "latents and keep the last latent's all-False mask row")


def random_crafter_state(T: int, g: torch.Generator) -> dict:
    """T random Crafter states as the episode extras hold them (the input of a crafter_state tokenizer)."""
    from dreamer.tokenizer.crafter_state import FACINGS, SEMANTIC_NAMES

    face = torch.randint(0, len(FACINGS), (T,), generator=g)
    return {"local_view": torch.randint(0, len(SEMANTIC_NAMES), (T, 9, 7), generator=g).numpy(),
            "inventory": torch.randint(0, 10, (T, 16), generator=g).numpy(),
            "facing": torch.tensor(FACINGS)[face].numpy(), "daylight": torch.rand(T, generator=g).numpy(),
            "sleeping": (torch.rand(T, generator=g) < 0.5).numpy()}


def check_tokenizer(tok, batch: dict, cache=None, frame_size: int = 64) -> list[Check]:
    """Encode S+2 random frames (random states for crafter_state): expect T_lat = 1 + ceil((T-1)/S) = 3 latents
    of (N, C), finite."""
    S = int(tok.S)
    T = S + 2
    want_L = 1 + math.ceil((T - 1) / S)
    g = torch.Generator().manual_seed(0)
    grad_before = torch.is_grad_enabled()
    if getattr(tok, "reads_info", False):  # crafter_state: encodes the privileged state, not frames
        z = tok.encode_state(**random_crafter_state(T, g))[None]
    else:
        frames = torch.randint(0, 256, (1, T, frame_size, frame_size, 3), generator=g, dtype=torch.uint8)
        z = tok.encode(frames)
    want = (1, want_L, int(tok.num_tokens), int(tok.channels))
    out = [verdict(tuple(z.shape) == want, "tokenizer/output_shape", "x".join(map(str, z.shape)),
                   f"(1, T_lat={want_L}, N, C) for T={T} frames",
                   f"encode() gave {tuple(z.shape)}, expected {want}: T_lat must be 1 + ceil((T-1)/S) (the wrapper "
                   "pads the tail to 1+S·k frames; diffusers alone gives 1 + floor(T/S)) and N = (grid/pool)^2")]
    finite = bool(torch.isfinite(z).all())
    out.append(verdict(finite and float(z.float().std()) > 0, "tokenizer/output_finite",
                       float(z.float().std()) if finite else "non-finite", "finite, std > 0",
                       "the tokenizer produced non-finite or constant latents: check the weights "
                       "(tokenizer.pretrained) and bf16 settings"))
    out.append(verdict(torch.is_grad_enabled() == grad_before, "tokenizer/keeps_grad_mode", torch.is_grad_enabled(),
                       "encode() leaves the global grad mode alone",
                       "encode() changed the global grad mode: use `with torch.no_grad():` (a local context), "
                       "never torch.set_grad_enabled(False)"))
    if not getattr(tok, "reads_info", False) and int(tok.S) == 1:
        out.append(check_time_alignment(tok, g, frame_size))
    lat = batch.get("latents")
    if torch.is_tensor(lat) and lat.dim() == 4:
        nc = tuple(lat.shape[2:])
        out.append(verdict(nc == want[2:], "tokenizer/matches_batch", f"N={nc[0]} C={nc[1]}",
                           f"N={want[2]} C={want[3]} as the tokenizer gives",
                           f"batch latents are (.., {nc[0]}, {nc[1]}) but the tokenizer gives ({want[2]}, {want[3]}): "
                           "the cache was built with another pool / tokenizer; rebuild it or fix tokenizer.pool"))
    if cache is not None:
        same = cache.tokenizer_identity == tok.identity() and int(cache.chunk_len) == S
        out.append(verdict(same, "tokenizer/cache_identity", same, "cache built by this tokenizer",
                           f"the latent cache {getattr(cache, 'root', '')} was built by another tokenizer (weights, "
                           "pooling, resolution or S differ): rebuild it or point data.cache_dir elsewhere"))
    return out


def check_time_alignment(tok, g: torch.Generator, frame_size: int = 64) -> Check:
    """Change frame S (the last of latent 1's chunk) in 2S+1 random frames: latent 1 must change most. A latent that
    answers mostly to an EARLIER chunk's frames runs behind the actions (at S = 1, a causal window of 2 frames:
    docs/tokenizer.md, "One frame per latent"). Run for S = 1 only, where every frame alone makes it exact: at
    S > 1 which latent a random-weight VAE's Haar patches and strided causal convolutions move most is no verdict."""
    S = int(tok.S)
    frames = torch.randint(0, 256, (1, 2 * S + 1, frame_size, frame_size, 3), generator=g, dtype=torch.uint8)
    changed = frames.clone()
    changed[:, S] = 255 - changed[:, S]
    delta = (tok.encode(changed) - tok.encode(frames)).abs().mean((0, 2, 3))  # per latent step
    ok = int(delta.argmax()) == 1
    return verdict(ok, "tokenizer/time_alignment", " ".join(f"{float(d):.3g}" for d in delta),
                   "latent 1 changes most when frame S changes",
                   f"changing frame {S} moves latent {int(delta.argmax())} most: the latents lag the frames (and the "
                   "actions). At S = 1 set tokenizer.window_latents=0 (every frame encoded alone)", bad=WARN)


def check_batch(batch: dict, S: int | None = None, cards: list[int] | None = None) -> list[Check]:
    """Keys and dtypes, then ``actions.shape[1] == latents.shape[1]`` and the chunk layout."""
    missing = [k for k in BATCH_KEYS if not torch.is_tensor(batch.get(k))]
    if missing:
        return [Check("batch/keys", FAIL, ",".join(missing), f"tensors {list(BATCH_KEYS)}",
                      f"sample_batch lacks {missing}: pass a ClipSampler batch (dreamer.data.loader)")]
    lat, act, mask = batch["latents"], batch["actions"], batch["action_mask"]
    rew, cont = batch["rewards"], batch["continues"]
    out = [Check("batch/keys", OK, len(BATCH_KEYS), f"tensors {list(BATCH_KEYS)}")]
    bad = []
    if lat.dim() != 4 or not lat.is_floating_point():
        bad.append(f"latents must be float (B,T,N,C), got {lat.dtype} {tuple(lat.shape)}")
    if act.dim() != 4 or act.dtype != torch.int64:
        bad.append(f"actions must be int64 (B,T,S,D), got {act.dtype} {tuple(act.shape)}")
    if mask.dtype != torch.bool or mask.shape != act.shape[:3]:
        bad.append(f"action_mask must be bool {tuple(act.shape[:3])}, got {mask.dtype} {tuple(mask.shape)}")
    out.append(verdict(not bad, "batch/dtypes", len(bad), "dtypes and ranks of docs/design.md §3", "; ".join(bad)))
    if bad:
        return out
    B, T = lat.shape[:2]
    problems = []
    if tuple(act.shape[:2]) != (B, T):
        problems.append(f"actions (B,T)={tuple(act.shape[:2])} vs latents {(B, T)}")
    for k, v in (("rewards", rew), ("continues", cont)):
        if tuple(v.shape) != (B, T):
            problems.append(f"{k} {tuple(v.shape)} vs latents (B,T)={(B, T)}")
    out.append(verdict(not problems, "batch/action_alignment", f"actions T={act.shape[1]}, latents T={T}",
                       "actions.shape[1] == latents.shape[1] (and rewards, continues)",
                       "; ".join(problems) + ". " + ALIGN_HINT))
    layout = []
    if S is not None and act.shape[2] != S:
        layout.append(f"chunk length {act.shape[2]} != S={S} of the tokenizer / models")
    if cards is not None:
        if act.shape[3] != len(cards):
            layout.append(f"{act.shape[3]} action components but the models have cards={list(cards)}")
        else:
            valid = act[mask] if mask.any() else act.reshape(-1, act.shape[3])[:0]
            hi = torch.as_tensor(cards, device=act.device)
            if bool(((valid < 0) | (valid >= hi)).any()):
                layout.append(f"valid actions outside [0, card) for cards={list(cards)}")
    if not bool(mask.any()):
        layout.append("action_mask is all False: no action is ever applied")
    out.append(verdict(not layout, "batch/action_chunks", f"S={act.shape[2]} D={act.shape[3]}",
                       "chunks of S sub-steps, D components in range", "; ".join(layout)
                       + ": rebuild the cache with this tokenizer / action space, or fix the models' cards / S"))
    return out


def check_latents(batch: dict, th: Thresholds) -> list[Check]:
    """Finite latents with non-zero spread, standardised per channel."""
    lat = batch.get("latents")
    if not torch.is_tensor(lat) or lat.dim() != 4:
        return []
    z = lat.detach().float()
    finite = bool(torch.isfinite(z).all())
    out = [verdict(finite, "batch/latents_finite", finite, "all finite",
                   f"{int((~torch.isfinite(z)).sum())} non-finite latent values: a corrupt cache episode, or "
                   "std = 0 in the cache statistics; check the provenance of the batch and rebuild the cache")]
    if not finite:
        return out
    std = float(z.std())
    per_channel = z.reshape(-1, z.shape[-1]).std(0)  # (C,)
    dead = int((per_channel < th.latent_dead_channel).sum())
    lo, hi = th.latent_std_range
    if std < th.latent_std_min:
        status, hint = FAIL, ("latents are constant: the tokenizer output is degenerate (blank frames, broken "
                              "weights) or the batch was zero-filled")
    elif dead or not lo <= std <= hi:
        status, hint = WARN, (f"{dead} of {z.shape[-1]} channels are constant, overall std {std:.3g}: latents are "
                              "expected standardised per channel with the cache statistics (std about 1)")
    else:
        status, hint = OK, ""
    out.append(Check("batch/latent_spread", status, std, f"std in [{lo}, {hi}], no constant channel", hint))
    return out
