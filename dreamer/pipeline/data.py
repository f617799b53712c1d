"""Episodes → latent cache, as every phase script starts: collect when asked and nothing is there,
encode what is not cached yet (sharded across distributed ranks), and open the cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from dreamer.atomic import remove_stale_temps
from dreamer.data.cache import DamagedCacheError, LatentCache, build_cache, heal, write_manifest_file
from dreamer.data.episode import EpisodeError, list_episodes
from dreamer.errors import PathKindError, require_dir
from dreamer.tokenizer import CosmosTokenizerWrapper, build_tokenizer
from dreamer.training.runtime import releases_on_error

log = logging.getLogger(__name__)


def make_tokenizer(cfg, device) -> CosmosTokenizerWrapper:
    """The frozen tokenizer of ``cfg.tokenizer`` on ``device``: Cosmos (random weights come from a fixed seed), or
    the privileged Crafter-state reference for ``tokenizer.kind: crafter_state`` (same interface)."""
    tokenizer = build_tokenizer(cfg.tokenizer).to(device)
    if getattr(tokenizer, "reads_info", False):
        log.info("tokenizer.kind=%s: latents encode the PRIVILEGED game state (a reference, not a pixel agent)",
                 cfg.tokenizer.kind)
    return tokenizer


def episode_paths(rt) -> list[Path]:
    """The episode files of ``data.episodes_dir``, collected first (rank 0) when too few and asked to."""
    cfg = rt.cfg
    root = Path(cfg.data.episodes_dir)
    if root.exists() and not root.is_dir():
        require_dir(root, "data.episodes_dir")  # says what it is instead
    if rt.is_main:
        remove_stale_temps(root)  # episode files half-written by a killed collection
    found = list_episodes(root) if root.is_dir() else []
    if len(found) < cfg.collect.num_episodes and cfg.data.collect:
        if rt.is_main:
            from dreamer.envs.collect import collect_episodes

            log.info("collecting %d episodes of %s into %s (policy %s, epsilon %.2f)", cfg.collect.num_episodes,
                     cfg.env.env_id, root, cfg.collect.policy, cfg.collect.epsilon)
            collect_episodes(cfg.env, cfg.collect, root)
        rt.barrier()
        found = list_episodes(root)
    if not found:
        raise PathKindError(
            f"data.episodes_dir={root} holds no episode files; collect some (data.collect=true) or convert a dataset"
        )
    return found


def prepare_data(rt, tokenizer: CosmosTokenizerWrapper | None = None) -> tuple[CosmosTokenizerWrapper, LatentCache]:
    """The frozen tokenizer and an up-to-date latent cache for the run's ``data`` section (``rt.cfg``)."""
    cfg = rt.cfg
    tokenizer = tokenizer or make_tokenizer(cfg, rt.device)
    paths = episode_paths(rt)
    cache_dir = require_dir(cfg.data.cache_dir, "data.cache_dir", create=True)
    healed = heal(cache_dir) if rt.is_main else {}  # damaged entries moved aside: the build re-encodes them
    rt.barrier()
    try:
        build_cache(paths, tokenizer, cache_dir, shard=(rt.rank, rt.world), write_manifest=False,
                    frame_size=cfg.env.size)
    except EpisodeError as e:
        if Path(e.path).stem in healed:
            raise DamagedCacheError(f"latent cache entry {healed[Path(e.path).stem]}, and it cannot be rebuilt: its "
                                    f"episode file is unusable too ({e})") from e
        raise
    rt.barrier()
    if rt.is_main:
        names = [p.stem for p in paths]
        manifest = cache_dir / "manifest.json"
        cache = LatentCache(cache_dir) if manifest.is_file() else None
        if (cache is None or cache.names != sorted(names) or healed or cache.rechecked
                or _stale(cache, paths)):
            write_manifest_file(cache_dir, names, tokenizer.identity(), cfg.data.val_fraction, cfg.data.split_seed)
    rt.barrier()
    cache = LatentCache(cache_dir, expect_tokenizer=tokenizer.identity())
    log.info("latent cache %s: %d episodes (%d train / %d val), %d latent steps", cache_dir, len(cache.names),
             len(cache.train_names), len(cache.val_names), cache.manifest["counts"]["latent_steps"])
    return tokenizer, cache


def open_or_prepare(rt, tokenizer: CosmosTokenizerWrapper) -> LatentCache:
    """The cache of the run's ``data`` section as it is when its manifest exists (checked against ``tokenizer``),
    else built."""
    root = Path(rt.cfg.data.cache_dir)
    if (root / "manifest.json").is_file():
        try:
            return LatentCache(root, expect_tokenizer=tokenizer.identity())
        except DamagedCacheError as e:
            log.warning("%s: rebuilding it", e)
    return prepare_data(rt, tokenizer)[1]


def _stale(cache: LatentCache, paths: list[Path]) -> bool:
    """True when an episode was re-encoded since the manifest was written (its hash changed)."""
    for p in paths:
        src = json.loads((cache.root / "episodes" / p.stem / "source.json").read_text())
        if src["sha256"] != cache.manifest["sources"][p.stem]["sha256"]:
            return True
    return False


@releases_on_error
def main(argv=None) -> None:
    """``python -m dreamer.pipeline.data --config …``: collect (when asked) and build the latent cache only."""
    from dreamer.pipeline.cli import parse_args
    from dreamer.training.runtime import start

    cfg, _ = parse_args("Collect episodes (when asked) and build the latent cache of a config.", argv)
    rt = start(cfg, "cache")
    prepare_data(rt)
    rt.accept()
    rt.close()


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
