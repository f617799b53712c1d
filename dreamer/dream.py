"""Videos of a trained world model: real frames | reconstructed | open loop under the real actions |
imagined under the agent's policy (agent checkpoints), side by side, frame by frame.

    python -m dreamer.dream --checkpoint checkpoints/crafter_tiny/phase3_final.pt [--episodes 3] [--out DIR]

Starts from real states of the latent cache (validation episodes first); the tokenizer and the cache
come from the checkpoint's saved config unless --config / --set say otherwise. Writes one MP4 per
episode (default <checkpoint folder>/dreams/) and prints their paths.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from dreamer.viewer.frames import compose
from dreamer.viewer.keys import keymap_for
from dreamer.viewer.load import load_world, world_arguments
from dreamer.viewer.video import dream_clip, episode_fps, write_mp4

log = logging.getLogger("dream")


def parse(argv=None) -> argparse.Namespace:
    p = world_arguments(__doc__)
    p.add_argument("--episodes", type=int, default=1, help="how many episodes (validation split first)")
    p.add_argument("--episode", action="append", default=[], help="an episode name of the cache (repeatable)")
    p.add_argument("--start", type=int, default=None, help="latent step of the real start (default: context - 1)")
    p.add_argument("--horizon", type=int, default=None, help="decisions to dream (default: as many as fit)")
    p.add_argument("--max-frames", type=int, default=256, help="cap on the frames per video")
    p.add_argument("--scale", type=int, default=4, help="pixel scale of each panel")
    p.add_argument("--fps", type=float, default=None, help="frames per second (default: the episode's)")
    p.add_argument("--out", default=None, help="output folder (default <checkpoint folder>/dreams)")
    return p.parse_args(argv)


def main(argv=None) -> list[Path]:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        world = load_world(args.checkpoint, args.config, args.set, args.device)
    except (OSError, ValueError) as e:
        sys.exit(f"dream: {e}")
    cache = world.cache
    names = args.episode or (cache.val_names + cache.train_names)[: args.episodes]
    unknown = sorted(set(names) - set(cache.names))
    if unknown:
        sys.exit(f"dream: episodes {unknown} are not in the cache {cache.root} (it has {cache.names[:5]}…)")
    out_dir = Path(args.out) if args.out else world.path.parent / "dreams"
    keymap = keymap_for(cache.action_space, world.cfg.env.env_id)
    gen = torch.Generator(device=world.device).manual_seed(args.seed)
    written = []
    for name in names:
        try:
            clip = dream_clip(world.tokenizer, cache, world.dynamics, world.agent, name, args.start, args.context,
                              args.horizon, world.cfg.env.size, keymap, gen, args.max_frames)
        except ValueError as e:  # a start outside the episode, no room to dream
            sys.exit(f"dream: {e}")
        frames = compose(clip.panels, clip.captions, scale=args.scale)
        path = write_mp4(frames, out_dir / f"{world.path.stem}_{name}_s{clip.start}.mp4",
                         args.fps or episode_fps(cache, name))
        log.info("%s: %s, context %d + %d decisions (S=%d), %d frames", path, " | ".join(clip.panels), clip.context,
                 clip.horizon, world.S, len(frames))
        print(path)
        written.append(path)
    return written


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
