"""Block-causal dynamics transformer (docs/design.md §4), x-prediction.

Token layout of one latent step t (M = N + R + 2 slots, in this order):
    [ N latent tokens (Linear C->d) | R registers | shortcut token | action token ]
* shortcut token = Linear([emb_tau(tau_idx) ; emb_step(step_idx)]) with tau = tau_idx / k_max
  (tau_idx in 0..k_max) and step size Δ = 2**-step_idx (step_idx in 0..log2 k_max).
* action token = base + sum over valid sub-steps s of (pos_emb[s] + sum_c emb_c(a[s, c])).
  A fully masked chunk gives the base embedding alone ("no action", action-free video).
* A learned slot embedding is added to every slot (the positional scheme of the space layers).
* With ``cfg.action_routing`` the N latent tokens of step t also receive R(a) @ e_{t-1}: the previous step's token
  embeddings (Linear C->d of its noisy input) mixed over tokens by R(a) (N x N), the sum of one learned map per
  action value of the chunk leading into t (valid sub-steps only; zero for step 0 and for a masked chunk).
  With ``cfg.routing_gate`` that term is g R(a) @ e_{t-1} + (1 - g) e_{t-1}, g in (0, 1) one per step: a few
  features of each token of e_{t-1} (an MLP of its embedding and slot), weighed by one weight per (action value,
  token, feature): whether the action takes effect, read where it matters (a move into a tree does not move).

ACTION ALIGNMENT.  `forward` takes CACHE-ALIGNED actions: actions_btsd[:, k] is the chunk applied from
latent k towards latent k+1 (docs/design.md §3).  Step t is conditioned on the chunk that led INTO latent t,
i.e. actions_btsd[:, t-1]; step 0 gets the base embedding only (or `prev_action_bsd` when continuing
from a KV cache).  The last row actions_btsd[:, T-1] is therefore unused.  `forward_into` is the
low-level entry point taking already INTO-aligned chunks (act_in[:, t] = chunk leading into t).

Attention is block-causal in time: outputs at step t depend on inputs at steps <= t only.  Layers are
space-only (within a step) except every `time_every`-th, which attends causally over time per slot
(axial) with time RoPE.  A `KVCache` holds the keys/values of the time layers for step-wise generation.
"""

from __future__ import annotations

import torch
from torch import nn

from dreamer.transformer import RMSNorm

from .config import DynamicsConfig
from .layers import Block, LayerKV, RotaryTime

GATE_FEATURES = 4  # features per previous token that the routing gate reads


class KVCache:
    """Keys/values of every time layer for the steps processed so far (positions 0..length-1)."""

    def __init__(self, model: DynamicsModel) -> None:
        self.layers = [LayerKV(model.cfg.max_time) if blk.time else None for blk in model.blocks]
        self.last_embedding: torch.Tensor | None = None  # (B, N, d) token embeddings of the last cached step

    @property
    def length(self) -> int:
        return next(lk.length for lk in self.layers if lk is not None)


class DynamicsModel(nn.Module):
    """f(z~, tau, d, actions) -> z1_hat.  See the module docstring for layout and alignment."""

    def __init__(self, cfg: DynamicsConfig, num_tokens: int, latent_dim: int, action_cards: list[int],
                 chunk_len: int) -> None:
        super().__init__()
        if num_tokens < 1 or latent_dim < 1 or chunk_len < 1:
            raise ValueError(f"DynamicsModel: num_tokens={num_tokens}, latent_dim={latent_dim}, "
                             f"chunk_len={chunk_len} must all be >= 1")
        if len(action_cards) < 1 or any(int(c) < 1 for c in action_cards):
            raise ValueError(f"DynamicsModel: action_cards={action_cards} must be a non-empty list of ints >= 1")
        self.cfg = cfg
        # Range checks on actions / labels cost a device sync per forward; they are skipped inside torch.compile
        # (see _validating). Set False in tuned GPU training once the data pipeline is trusted.
        self.validate_inputs = True
        self.num_tokens, self.latent_dim, self.chunk_len = num_tokens, latent_dim, chunk_len
        self.action_cards = [int(c) for c in action_cards]
        d = cfg.d_model
        self.num_slots = num_tokens + cfg.num_registers + 2
        self.latent_in = nn.Linear(latent_dim, d)
        self.registers = nn.Parameter(torch.randn(cfg.num_registers, d) * 0.02)
        self.tau_emb = nn.Embedding(cfg.k_max + 1, d)
        self.step_emb = nn.Embedding(cfg.num_step_sizes, d)
        self.shortcut_proj = nn.Linear(2 * d, d)
        self.register_buffer("card_offsets", torch.tensor([0] + self.action_cards[:-1]).cumsum(0),
                             persistent=False)
        self.register_buffer("cards", torch.tensor(self.action_cards), persistent=False)
        self.action_emb = nn.Embedding(sum(self.action_cards), d)
        self.substep_emb = nn.Parameter(torch.randn(chunk_len, d) * 0.02)
        self.action_base = nn.Parameter(torch.randn(d) * 0.02)
        self.slot_emb = nn.Parameter(torch.randn(self.num_slots, d) * 0.02)
        # action routing: one N x N token map per action value, stored / routing_scale, zero at init
        self.routing = (nn.Parameter(torch.zeros(sum(self.action_cards), num_tokens, num_tokens))
                        if cfg.action_routing else None)
        # what the maps move: the shared input embedding, or the previous step's own embedding (routing_input)
        self.route_in = nn.Linear(latent_dim, d) if self.routing is not None and cfg.routing_input == "own" else None
        if cfg.routing_gate:  # whether the action takes effect, read from the previous step's tokens
            self.gate_feat = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, GATE_FEATURES))  # per token
            self.gate_w = nn.Parameter(torch.zeros(sum(self.action_cards), num_tokens, GATE_FEATURES))
            self.gate_b = nn.Parameter(torch.full((sum(self.action_cards),), 2.0))  # g about 0.9: the maps act first
        if self.routing is not None and cfg.routing_init == "identity":  # a full chunk's S*D maps sum to I
            with torch.no_grad():
                self.routing += torch.eye(num_tokens) / (chunk_len * len(self.action_cards) * cfg.routing_scale)
        rope = RotaryTime(d // cfg.num_heads, cfg.max_time)
        self.blocks = nn.ModuleList(Block(cfg, cfg.is_time_layer(i), rope) for i in range(cfg.num_layers))
        self.out_norm = RMSNorm(d)
        self.latent_out = nn.Linear(d, latent_dim)
        for emb in (self.tau_emb, self.step_emb, self.action_emb):
            nn.init.normal_(emb.weight, std=0.02)

    # ------------------------------------------------------------------------------------------
    def init_kwargs(self) -> dict:
        """Constructor arguments besides cfg, for checkpoints: DynamicsModel(cfg, **model.init_kwargs())."""
        return {"num_tokens": self.num_tokens, "latent_dim": self.latent_dim,
                "action_cards": list(self.action_cards), "chunk_len": self.chunk_len}

    def new_cache(self) -> KVCache:
        """Empty KV cache for step-wise generation (capacity cfg.max_time steps)."""
        return KVCache(self)

    @staticmethod
    def into_actions(actions_btsd: torch.Tensor, action_mask_bts: torch.Tensor,
                     prev_action_bsd: torch.Tensor | None = None, prev_mask_bs: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cache-aligned -> into-aligned: out[:, t] = actions[:, t-1]; out[:, 0] = prev (or masked)."""
        b, _, s, dd = actions_btsd.shape
        if prev_action_bsd is None:
            prev_action_bsd = actions_btsd.new_zeros(b, s, dd)
            prev_mask_bs = action_mask_bts.new_zeros(b, s)
        elif prev_mask_bs is None:
            prev_mask_bs = action_mask_bts.new_ones(b, s)
        act = torch.cat([prev_action_bsd[:, None], actions_btsd[:, :-1]], 1)
        mask = torch.cat([prev_mask_bs[:, None].to(action_mask_bts.dtype), action_mask_bts[:, :-1]], 1)
        return act, mask

    def embed_actions(self, act_btsd: torch.Tensor, mask_bts: torch.Tensor) -> torch.Tensor:
        """Action token per step: (B,T,S,D) int64 + (B,T,S) bool -> (B,T,d)."""
        b, t, s, dd = act_btsd.shape
        if s != self.chunk_len or dd != len(self.action_cards):
            raise ValueError(f"actions shape {tuple(act_btsd.shape)}: expected (B,T,S={self.chunk_len},"
                             f"D={len(self.action_cards)})")
        if mask_bts.shape != (b, t, s):
            raise ValueError(f"action_mask shape {tuple(mask_bts.shape)} != {(b, t, s)}")
        mask = mask_bts.bool()
        act = torch.where(mask[..., None], act_btsd.long(), 0)
        if self._validating():
            self.check_actions(act_btsd, mask_bts)
        e = self.action_emb(act + self.card_offsets).sum(-2) + self.substep_emb  # (B,T,S,d)
        e = (e * mask[..., None].to(e.dtype)).sum(-2)  # masked sub-steps contribute nothing
        return e + self.action_base

    def _validating(self) -> bool:
        """Whether the data-dependent range checks run: ``validate_inputs``, and never inside ``torch.compile``,
        where each would break the graph (a compiled training step checks its batch eagerly:
        :meth:`check_actions`)."""
        return self.validate_inputs and not torch.compiler.is_compiling()

    def check_actions(self, act_btsd: torch.Tensor, mask_bts: torch.Tensor) -> None:
        """Refuse action values outside their cards on the valid sub-steps (one device sync)."""
        act = torch.where(mask_bts.bool()[..., None], act_btsd.long(), 0)
        if bool(((act < 0) | (act >= self.cards)).any()):
            raise ValueError(f"action values out of range for cards {self.action_cards} (valid sub-steps)")

    def _check(self, z_btnc, tau_idx_bt, step_idx_bt) -> None:
        if z_btnc.dim() != 4 or z_btnc.shape[2:] != (self.num_tokens, self.latent_dim):
            raise ValueError(f"z shape {tuple(z_btnc.shape)}: expected (B,T,N={self.num_tokens},"
                             f"C={self.latent_dim})")
        bt = z_btnc.shape[:2]
        if tau_idx_bt.shape != bt or step_idx_bt.shape != bt:
            raise ValueError(f"tau_idx {tuple(tau_idx_bt.shape)} / step_idx {tuple(step_idx_bt.shape)} "
                             f"must have shape (B,T)={tuple(bt)}")
        if self._validating():
            k, j = self.cfg.k_max, self.cfg.min_step_idx
            if bool(((tau_idx_bt < 0) | (tau_idx_bt > k)).any()) or bool(((step_idx_bt < 0) | (step_idx_bt > j)).any()):
                raise ValueError(f"tau_idx must lie in [0, k_max={k}] and step_idx in [0, log2 k_max={j}]")

    def forward_into(self, z_btnc: torch.Tensor, tau_idx_bt: torch.Tensor, step_idx_bt: torch.Tensor,
                     act_in_btsd: torch.Tensor, mask_in_bts: torch.Tensor, kv_cache: KVCache | None = None,
                     update_cache: bool = True) -> torch.Tensor:
        """Predict z1_hat (B,T,N,C) from into-aligned actions (act_in[:, t] = chunk leading INTO step t).

        With `kv_cache`, the T given steps sit at time positions cache.length .. cache.length+T-1 and
        attend to the cached steps; `update_cache=False` leaves the cache unchanged (used for the K
        denoising passes of a step that is not final yet).
        """
        self._check(z_btnc, tau_idx_bt, step_idx_bt)
        b, t, n, _ = z_btnc.shape
        act = self.embed_actions(act_in_btsd, mask_in_bts)  # (B,T,d); validates the actions first
        emb = self.latent_in(z_btnc)  # (B,T,N,d)
        if self.routing is None:
            lat = emb
        else:
            src = emb if self.route_in is None else self.route_in(z_btnc)
            lat = emb + self._routed(src, act_in_btsd, mask_in_bts, kv_cache, update_cache)
        act = act.to(lat.dtype)
        reg = self.registers.to(lat.dtype).expand(b, t, -1, -1)  # (B,T,R,d)
        sc = self.shortcut_proj(torch.cat([self.tau_emb(tau_idx_bt.long()),
                                           self.step_emb(step_idx_bt.long())], -1))  # (B,T,d)
        x = torch.cat([lat, reg, sc[:, :, None].to(lat.dtype), act[:, :, None]], 2) + self.slot_emb.to(lat.dtype)
        start = kv_cache.length if kv_cache is not None else 0
        for i, blk in enumerate(self.blocks):
            cache = kv_cache.layers[i] if kv_cache is not None else None
            x = blk(x, cache, start, update_cache)
        return self.latent_out(self.out_norm(x[:, :, :n]))

    def _routed(self, emb_btnd: torch.Tensor, act_in_btsd: torch.Tensor, mask_in_bts: torch.Tensor,
                kv_cache: KVCache | None, update_cache: bool) -> torch.Tensor:
        """R(a_into_t) @ emb_{t-1} (B,T,N,d) for the routed embeddings ``emb_btnd`` of each step; the step before the
        first comes from the KV cache (zeros if none). With the gate, g R(a) emb_{t-1} + (1 - g) emb_{t-1} (see
        :meth:`_gate`); a fully masked chunk still routes nothing."""
        b, _, n, d = emb_btnd.shape
        first = kv_cache.last_embedding if kv_cache is not None else None
        if first is None:
            first = emb_btnd.new_zeros(b, n, d)
        prev = torch.cat([first[:, None].to(emb_btnd.dtype), emb_btnd[:, :-1]], 1)  # (B,T,N,d)
        if kv_cache is not None and update_cache:
            kv_cache.last_embedding = emb_btnd[:, -1].detach()
        mask = mask_in_bts.bool()
        idx = torch.where(mask[..., None], act_in_btsd.long(), 0) + self.card_offsets  # (B,T,S,D)
        maps = (self.routing[idx] * mask[..., None, None, None].to(self.routing.dtype)).sum((2, 3))  # (B,T,N,N)
        routed = (maps * self.cfg.routing_scale).to(emb_btnd.dtype) @ prev
        if not self.cfg.routing_gate:
            return routed
        g = self._gate(prev, idx, mask)[..., None, None]  # (B,T,1,1)
        acted = mask.any(-1)[..., None, None].to(prev.dtype)  # no chunk: nothing routed, gated or not
        return g * routed + (1 - g) * prev * acted

    def _gate(self, prev_btnd: torch.Tensor, idx_btsd: torch.Tensor, mask_bts: torch.Tensor) -> torch.Tensor:
        """g (B,T) in (0, 1): a few features of each previous token (an MLP of its embedding and position), read by
        one weight per (action value, token, feature) and a bias per action value, averaged over the chunk's valid
        sub-steps and components (``idx_btsd``: offset action indices)."""
        n = prev_btnd.shape[-2]
        feat = self.gate_feat(prev_btnd + self.slot_emb[:n].to(prev_btnd.dtype))  # (B,T,N,F)
        valid = mask_bts[..., None].expand(idx_btsd.shape).to(feat.dtype)  # (B,T,S,D)
        w = (self.gate_w[idx_btsd] * valid[..., None, None]).sum((2, 3))  # (B,T,N,F)
        b = (self.gate_b[idx_btsd] * valid).sum((2, 3))
        logit = ((w.to(feat.dtype) * feat).sum((2, 3)) + b) / valid.sum((2, 3)).clamp_min(1)
        return torch.sigmoid(logit.float()).to(prev_btnd.dtype)

    def forward(self, z_btnc: torch.Tensor, tau_idx_bt: torch.Tensor, step_idx_bt: torch.Tensor,
                actions_btsd: torch.Tensor, action_mask_bts: torch.Tensor, kv_cache: KVCache | None = None,
                prev_action_bsd: torch.Tensor | None = None, prev_mask_bs: torch.Tensor | None = None,
                update_cache: bool = True) -> torch.Tensor:
        """Predict z1_hat (B,T,N,C) from CACHE-ALIGNED actions (B,T,S,D) and mask (B,T,S).

        Step t uses actions[:, t-1]; step 0 uses `prev_action_bsd` (the chunk leading into it) if
        given, else the base embedding alone.  Continuing a non-empty `kv_cache` without
        `prev_action_bsd` is refused, as it would silently drop that chunk; pass an all-False
        `prev_mask_bs` for "no action".
        """
        if kv_cache is not None and kv_cache.length > 0 and prev_action_bsd is None:
            raise ValueError("forward: kv_cache is not empty, so pass prev_action_bsd (the chunk leading into "
                             "the first new step; all-False prev_mask_bs for none)")
        act, mask = self.into_actions(actions_btsd, action_mask_bts, prev_action_bsd, prev_mask_bs)
        return self.forward_into(z_btnc, tau_idx_bt, step_idx_bt, act, mask, kv_cache, update_cache)
