"""Where does the world model err? Its one-step error on the privileged-state cache, split by what the action did.

    python -m diagnostics.world_model_errors --checkpoint checkpoints/crafter_state/phase1_cosmos_final.pt

Only for ``tokenizer.kind: crafter_state``, whose latents name each view cell's material (docs/tokenizer.md). From
held-out clips (context 4, one sampled continuation each, the checkpoint's sampler) it reports what phase 1 logs,
the squared error of the generated latent against copying the last one at h 1, 2, 4, 8 (``--horizons``: others, e.g.
up to phase 3's 16, past phase 1's training clips), and at h 1 the same split by the transition:

* ``moved``: a move (left, right, up, down) after which the view scrolled;
* ``blocked``: a move after which the view stayed (the player walked into a tree, water, stone, a table ...);
* ``noop`` and ``other`` (do, place, make, sleep),

with the share of view cells whose material (the argmax) comes out wrong. For ``moved`` it also splits the view
into the interior and the row or column that scrolled in, next to a shift oracle that is TOLD the view moved (the
last view shifted by one cell, the new edge copied from the last view, inventory and status copied). With
``dynamics.routing_gate`` it adds the gate's mean on each kind, read from clean contexts.
"""

from __future__ import annotations

import argparse
import logging

import torch

from dreamer.data.loader import ClipSampler
from dreamer.dynamics import rollout

CONTEXT, HORIZONS = 4, (1, 2, 4, 8)
# Crafter's move actions and how each scrolls the view's content (rows, columns): moving left brings the content right
SCROLL = {"move_left": (0, 1), "move_right": (0, -1), "move_up": (1, 0), "move_down": (-1, 0)}


def _cells(z_bnc: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Material ids (B, rows, cols) of the view tokens of standardised state latents."""
    from dreamer.tokenizer.crafter_state import SEMANTIC_NAMES, VIEW, VIEW_TOKENS

    raw = z_bnc[:, :VIEW_TOKENS, :len(SEMANTIC_NAMES)] * std[:len(SEMANTIC_NAMES)] + mean[:len(SEMANTIC_NAMES)]
    return raw.argmax(-1).view(-1, VIEW[1], VIEW[0])


def _kind(action: int, scrolled: bool, moves: dict[int, str]) -> str:
    if action in moves:
        return "moved" if scrolled else "blocked"
    return "noop" if action == 0 else "other"


@torch.no_grad()
def error_breakdown(world, batches: int = 8, batch_size: int = 16, seed: int = 12345, sample_steps: int | None = None,
                    context_noise: float | None = None, horizons: tuple[int, ...] = HORIZONS) -> dict:
    """{figure: mean} over ``batches`` held-out batches of ``batch_size`` clips (see the module docstring);
    ``sample_steps`` / ``context_noise`` override the checkpoint's sampler (dynamics.sample_steps / context_noise);
    ``horizons`` are the open-loop horizons reported (clips of 4 + max(horizons) latent steps)."""
    from dreamer.envs.crafter_env import crafter_names
    from dreamer.tokenizer.crafter_state import VIEW, VIEW_TOKENS

    if world.tokenizer.identity().get("kind") != "crafter_state":
        raise ValueError("world_model_errors: needs a checkpoint trained on a tokenizer.kind: crafter_state cache")
    model, cache = world.dynamics.eval(), world.cache
    names = crafter_names()["actions"]
    moves = {names.index(n): n for n in SCROLL}
    if not horizons or min(horizons) < 1:
        raise ValueError(f"world_model_errors: horizons must be >= 1, got {horizons}")
    c, hmax = CONTEXT, max(horizons)
    val = ClipSampler(cache, cache.val_names or cache.train_names, c + hmax, batch_size, seed, 0, world.device)
    mean = torch.as_tensor(cache.mean, dtype=torch.float32, device=world.device).reshape(-1)
    std = torch.as_tensor(cache.std, dtype=torch.float32, device=world.device).reshape(-1)
    gen = torch.Generator(device=world.device).manual_seed(0)
    sums: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        s = sums.setdefault(key, [0.0, 0])
        s[0], s[1] = s[0] + value, s[1] + 1

    gates = _gate_probe(model) if model.cfg.routing_gate else None
    for i in range(batches):
        b = val.batch(10**6 + i)
        z, a, mk = b["latents"].float(), b["actions"], b["action_mask"]
        gen_z = rollout(model, z[:, :c], a[:, :c], mk[:, :c], a[:, c - 1:c - 1 + hmax], mk[:, c - 1:c - 1 + hmax],
                        generator=gen, sample_steps=sample_steps, context_noise=context_noise)
        last = z[:, c - 1]
        for h in horizons:
            add(f"h{h} model", float((gen_z[:, h - 1] - z[:, c - 1 + h]).pow(2).mean()))
            add(f"h{h} copy-last", float((last - z[:, c - 1 + h]).pow(2).mean()))
        truth, pred = z[:, c], gen_z[:, 0]
        ids_last, ids_true, ids_pred = (_cells(x, mean, std) for x in (last, truth, pred))
        scrolled = (ids_last != ids_true).float().mean((1, 2)) > 0.03
        for j in range(len(truth)):
            act = int(a[j, c - 1, 0, 0])
            kind = _kind(act, bool(scrolled[j]), moves)
            add(f"h1 [{kind}] model", float((pred[j] - truth[j]).pow(2).mean()))
            add(f"h1 [{kind}] copy-last", float((last[j] - truth[j]).pow(2).mean()))
            add(f"h1 [{kind}] wrong cells, model", float((ids_pred[j] != ids_true[j]).float().mean()))
            add(f"h1 [{kind}] wrong cells, copy-last", float((ids_last[j] != ids_true[j]).float().mean()))
            if kind != "moved":
                continue
            dr, dc = SCROLL[moves[act]]
            edge = torch.zeros(VIEW[1], VIEW[0], dtype=torch.bool, device=z.device)
            edge[0 if dr > 0 else -1] = dr != 0
            edge[:, 0 if dc > 0 else -1] |= dc != 0
            view = last[j, :VIEW_TOKENS].view(VIEW[1], VIEW[0], -1)
            shifted = torch.roll(view, shifts=(dr, dc), dims=(0, 1))
            shifted[edge] = view[edge]
            oracle = last[j].clone()
            oracle[:VIEW_TOKENS] = shifted.reshape(VIEW_TOKENS, -1)
            tv = truth[j, :VIEW_TOKENS].view(VIEW[1], VIEW[0], -1)
            ids_oracle = _cells(oracle[None], mean, std)[0]
            for who, x, ids in (("model", pred[j], ids_pred[j]), ("shift oracle", oracle, ids_oracle)):
                xv = x[:VIEW_TOKENS].view(VIEW[1], VIEW[0], -1)
                for part, sel in (("interior", ~edge), ("edge", edge)):
                    add(f"h1 [moved] {part} wrong cells, {who}", float((ids[sel] != ids_true[j][sel]).float().mean()))
                    add(f"h1 [moved] {part} error, {who}", float((xv[sel] - tv[sel]).pow(2).sum()) / truth[j].numel())
        if gates is not None:
            g = gates(z, a, mk)[:, 1:]  # the gate of step t reads the chunk a[t-1]
            for t in range(g.shape[1]):
                ids0, ids1 = _cells(z[:, t], mean, std), _cells(z[:, t + 1], mean, std)
                moved = (ids0 != ids1).float().mean((1, 2)) > 0.03
                for j in range(len(z)):
                    add(f"gate [{_kind(int(a[j, t, 0, 0]), bool(moved[j]), moves)}]", float(g[j, t]))
    return {k: s / n for k, (s, n) in sums.items()}


def _gate_probe(model):
    """A function (z, actions, mask) -> the routing gate (B, T) of every step, from clean contexts (context level)."""
    from dreamer.dynamics.sampler import context_tau_idx

    def gates(z, a, mk):
        seen = {}
        orig = model._gate

        def keep(*args):
            seen["g"] = orig(*args)
            return seen["g"]

        model._gate = keep
        try:
            bt = z.shape[:2]
            tau = torch.full(bt, context_tau_idx(model.cfg.k_max, model.cfg.context_noise), device=z.device)
            model(z, tau, torch.full(bt, model.cfg.min_step_idx, device=z.device), a, mk)
        finally:
            del model._gate
        return seen["g"]

    return gates


def report(figures: dict) -> str:
    lines = []
    horizons = sorted(int(k[1:-6]) for k in figures if k.startswith("h") and k.endswith(" model") and "[" not in k)
    for h in horizons:
        m, c = figures[f"h{h} model"], figures[f"h{h} copy-last"]
        lines.append(f"h{h}: model {m:.4f}, copy-last {c:.4f} ({m / c:.2f}x)")
    for kind in ("moved", "blocked", "noop", "other"):
        if f"h1 [{kind}] model" in figures:
            f = {k.removeprefix(f"h1 [{kind}] "): v for k, v in figures.items() if k.startswith(f"h1 [{kind}]")}
            lines.append(f"h1 {kind}: model {f['model']:.4f}, copy-last {f['copy-last']:.4f}; wrong cells "
                         f"{f['wrong cells, model']:.3f} against {f['wrong cells, copy-last']:.3f}")
    if "h1 [moved] interior error, model" in figures:
        for part in ("interior", "edge"):
            lines.append(f"h1 moved, {part}: error model {figures[f'h1 [moved] {part} error, model']:.4f}, shift oracle "
                         f"{figures[f'h1 [moved] {part} error, shift oracle']:.4f}; wrong cells "
                         f"{figures[f'h1 [moved] {part} wrong cells, model']:.3f} against "
                         f"{figures[f'h1 [moved] {part} wrong cells, shift oracle']:.3f}")
    gates = {k[6:-1]: v for k, v in figures.items() if k.startswith("gate [")}
    if gates:
        lines.append("routing gate: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(gates.items())))
    return "\n".join(lines)


def main(argv=None) -> dict:
    from dreamer.viewer.load import load_world

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a phase-1 (or later) checkpoint on a crafter_state cache")
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--batches", type=int, default=8, help="held-out batches of --batch-size clips")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sample-steps", type=int, default=None,
                   help="K sampling steps per latent instead of the checkpoint's dynamics.sample_steps (1 = one jump)")
    p.add_argument("--context-noise", type=float, default=None,
                   help="context corruption at sampling instead of the checkpoint's dynamics.context_noise")
    p.add_argument("--horizons", default=",".join(map(str, HORIZONS)),
                   help="open-loop horizons, comma-separated (phase 3 dreams 16 past a context of 4)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        world = load_world(args.checkpoint, args.config, args.set, args.device)
        try:
            horizons = tuple(int(h) for h in args.horizons.split(","))
        except ValueError:
            raise ValueError(f"--horizons {args.horizons!r}: give whole numbers, comma-separated (e.g. 1,2,4,8,16)")
        figures = error_breakdown(world, args.batches, args.batch_size, sample_steps=args.sample_steps,
                                  context_noise=args.context_noise, horizons=horizons)
    except (OSError, ValueError) as e:
        raise SystemExit(f"world_model_errors: {e}") from e
    print(report(figures))
    return figures


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
