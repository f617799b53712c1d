"""Convert MineRL v0.4 or VPT recordings into the project's episode files.

    python -m dreamer.minecraft.convert --format minerl|vpt --src DIR_or_INDEX --out EPISODE_DIR \
        [--size 64] [--limit N] [--data-root DIR] [--resize squash|crop]

One ``<name>.npz`` per recording (``<task>__<trajectory>`` for MineRL, ``<version>__<recording>`` for
VPT). Resumable: an episode file already in ``--out`` is not converted again (writes are atomic, so
an existing file is complete); its statistics still count in the summary. A broken recording is
skipped with a warning naming the file and the problem, and counted. The summary (episodes, frames,
hours, action statistics, reward events, failures) is logged and written to
``<out>/conversion_summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dreamer.atomic import atomic_write_bytes
from dreamer.data.episode import ActionSpace, Episode, EpisodeError, save_episode
from dreamer.errors import require_dir
from dreamer.minecraft.actions import MINERL_V04, VPT, MinecraftLayout
from dreamer.minecraft.minerl_v04 import find_minerl_trajectories, read_minerl_trajectory, task_of
from dreamer.minecraft.paths import safe_filename
from dreamer.minecraft.stats import ConversionSummary
from dreamer.minecraft.vpt import read_vpt_recording
from dreamer.minecraft.vpt_index import find_vpt_recordings, read_vpt_index

log = logging.getLogger(__name__)
SUMMARY_NAME = "conversion_summary.json"


@dataclass
class ConvertConfig:
    format: str  # "minerl" (v0.4 trajectory folders) or "vpt" (contractor .mp4 + .jsonl)
    src: str  # MineRL: data folder; VPT: folder of recordings, or an index JSON
    out: str  # episode folder to write
    size: int = 64  # frame side after resizing; 0 keeps the original resolution
    limit: int | None = None  # convert at most the first N recordings (sorted / index order)
    data_root: str | None = None  # VPT index only: local folder the relpaths live under (default: index's folder)
    resize: str = "squash"  # "squash" the whole frame or "crop" the centre square first
    task: str | None = None  # MineRL: task name when the folder layout does not give it
    allow_pickle: bool = False  # MineRL: accept pickled arrays in rendered.npz (trusted data only)
    draw_cursor: bool = True  # VPT: draw the mouse cursor on GUI frames
    max_mismatch: int = 20  # VPT: most frames/action lines may differ before a pair counts as broken
    strict: bool = False  # stop at the first broken recording instead of skipping it
    progress: bool = True

    def __post_init__(self):
        if self.format not in ("minerl", "vpt"):
            raise ValueError(f"--format must be 'minerl' or 'vpt', got '{self.format}'")
        if self.size < 0:
            raise ValueError(f"--size must be >= 0, got {self.size}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"--limit must be >= 0, got {self.limit}")


@dataclass
class Job:
    name: str  # output file stem (already safe)
    source: Path  # what to name in warnings
    read: Callable[[], Episode]


def plan_jobs(cfg: ConvertConfig) -> tuple[list[Job], int]:
    """The recordings to convert (in a stable order, ``--limit`` applied) and how many index entries are missing."""
    src, missing = Path(cfg.src), 0
    jobs: list[Job] = []
    if cfg.format == "minerl":
        for d in find_minerl_trajectories(src):
            task = cfg.task or task_of(d)
            jobs.append(Job(safe_filename(task, d.name), d, lambda d=d, task=task: read_minerl_trajectory(
                d, cfg.size, cfg.resize, task=task, allow_pickle=cfg.allow_pickle)))
    else:
        if src.is_file():
            root = Path(cfg.data_root) if cfg.data_root else src.parent
            require_dir(root, "VPT data root", "set --data-root")
            index = read_vpt_index(src)
            recs = index.recordings(root, source=src, only_present=True)
            missing = len(index.relpaths) - len(recs)
            if missing:
                log.warning("%s: %d of %d indexed recordings are not under %s (not downloaded?); converting the "
                            "%d present", src, missing, len(index.relpaths), root, len(recs))
        else:
            recs = find_vpt_recordings(src)
        for r in recs:
            jobs.append(Job(safe_filename(r.version, r.stem), r.video, lambda r=r: read_vpt_recording(
                r, cfg.size, cfg.resize, cfg.draw_cursor, cfg.max_mismatch)))
    seen: dict[str, int] = {}
    for job in jobs:  # two recordings with one name get distinct files
        seen[job.name] = seen.get(job.name, 0) + 1
        if seen[job.name] > 1:
            job.name = f"{job.name}-{seen[job.name]}"
    return (jobs if cfg.limit is None else jobs[:cfg.limit]), missing


def _count_existing(path: Path, layout: MinecraftLayout, summary: ConversionSummary) -> bool:
    """Add an already-written episode's statistics (frames are not read); False if it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            space = ActionSpace.from_dict(meta["action_space"])
            extras = {k[len("extra__"):]: z[k] for k in z.files if k in ("extra__null_action", "extra__gui_open")}
            actions, rewards = z["actions"], z["rewards"]
    except Exception as e:  # noqa: BLE001 - any damage means "convert again"
        log.warning("%s: existing episode file is unreadable (%s); converting it again", path, e)
        return False
    if space != layout.space:
        raise ValueError(f"{path} holds an episode in action space {space.names} but this conversion writes the "
                         f"'{layout.kind}' space; use a separate --out folder per format")
    summary.add_episode(actions, rewards, extras)
    return True


def write_summary(out: Path, summary: ConversionSummary) -> Path:
    """Write ``conversion_summary.json`` atomically."""
    return atomic_write_bytes(out / SUMMARY_NAME, json.dumps(summary.to_dict(), indent=1).encode())


def convert(cfg: ConvertConfig) -> ConversionSummary:
    """Convert every planned recording; broken ones are skipped (or raise with ``strict``)."""
    layout = MINERL_V04 if cfg.format == "minerl" else VPT
    jobs, missing = plan_jobs(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = ConversionSummary(layout, missing=missing)
    for job in tqdm(jobs, desc=f"convert {cfg.format}", unit="ep", disable=None if cfg.progress else True):
        target = out / f"{job.name}.npz"
        if target.is_file() and _count_existing(target, layout, summary):
            summary.skipped_existing += 1
            continue
        try:
            ep = job.read()
            save_episode(target, ep)
        except EpisodeError as e:
            if cfg.strict:
                raise
            log.warning("skipping broken recording %s: %s", job.source, e)
            summary.add_failure(str(job.source), str(e))
            continue
        except Exception as e:  # one odd file must not end a long conversion
            if cfg.strict:
                raise
            log.warning("skipping recording %s after an unexpected %s: %s", job.source, type(e).__name__, e,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            summary.add_failure(str(job.source), f"{type(e).__name__}: {e}")
            continue
        summary.converted += 1
        summary.add_episode(ep.actions, ep.rewards, ep.extras)
        log.debug("wrote %s (%d steps)", target, ep.num_steps)
    write_summary(out, summary)
    s = summary
    log.info("%s: %d episodes (%d converted, %d already present), %d frames = %.2f h at %d fps, %d reward events, "
             "%d broken recordings skipped%s", out, s.episodes, s.converted, s.skipped_existing, s.frames,
             s.steps / s.fps / 3600, s.fps, s.reward_events, s.failed,
             f", {s.missing} indexed recordings missing" if s.missing else "")
    return summary


def parse_args(argv: list[str] | None = None) -> ConvertConfig:
    p = argparse.ArgumentParser(prog="python -m dreamer.minecraft.convert", description=__doc__.split("\n")[0])
    p.add_argument("--format", required=True, choices=["minerl", "vpt"])
    p.add_argument("--src", required=True, help="MineRL data folder; VPT recordings folder or index JSON")
    p.add_argument("--out", required=True, help="episode folder to write")
    p.add_argument("--size", type=int, default=64, help="frame side (0 keeps the original resolution)")
    p.add_argument("--limit", type=int, default=None, help="convert at most N recordings")
    p.add_argument("--data-root", default=None, help="VPT index: local folder holding the relpaths")
    p.add_argument("--resize", choices=["squash", "crop"], default="squash")
    p.add_argument("--task", default=None, help="MineRL task name when the folder layout lacks it")
    p.add_argument("--allow-pickle", action="store_true", help="accept pickled arrays (trusted data only)")
    p.add_argument("--no-cursor", action="store_true", help="VPT: do not draw the cursor on GUI frames")
    p.add_argument("--max-mismatch", type=int, default=20, help="VPT: tolerated frames/lines difference")
    p.add_argument("--strict", action="store_true", help="stop at the first broken recording")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    return ConvertConfig(a.format, a.src, a.out, a.size, a.limit, a.data_root, a.resize, a.task, a.allow_pickle,
                         not a.no_cursor, a.max_mismatch, a.strict, not a.no_progress)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    try:
        summary = convert(cfg)
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    d = summary.to_dict()
    brief = {k: d[k] for k in ("episodes", "converted", "skipped_existing", "failed", "missing_files", "frames",
                               "hours", "reward_events", "reward_total", "null_action_fraction", "gui_open_fraction")}
    print(json.dumps(brief, indent=1))
    if summary.episodes == 0:
        if summary.failed == 0:
            log.error("no %s recordings found in %s", cfg.format, cfg.src)
        else:
            log.error("no episode was written to %s: all %d recordings failed", cfg.out, summary.failed)
        return 1
    return 0


if __name__ == "__main__":
    from dreamer.errors import run_cli

    sys.exit(run_cli(main))
