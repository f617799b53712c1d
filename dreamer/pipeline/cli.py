"""The phase scripts' command line: ``--config`` presets (stacked), ``--set key=value`` overrides,
``--no-diagnose`` and ``--fresh``; the result is the run's :class:`dreamer.config.Config`. Phases 2 and 3
also name the checkpoint they start from (:func:`parse_args_after`), which ``args.inputs`` records.

``runtime.start(cfg, phase, inputs=args.inputs, fresh=args.fresh)`` hands both to the run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from dreamer.config import Config, load
from dreamer.pipeline.checkpoints import FINAL, handoff_path, input_record, load_handoff


def parse_args(description: str, argv: list[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], object] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", action="append", default=[], help="YAML preset (repeat to stack)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    p.add_argument("--no-diagnose", action="store_true", help="do not stop on a failed diagnose_phase() check")
    p.add_argument("--fresh", action="store_true",
                   help="start this phase over instead of resuming: its earlier checkpoints, evaluation and "
                        "TensorBoard logs are moved to <run dir>/superseded/ (nothing is deleted)")
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback of a user error too (else: one line and exit codes 2-6, "
                        "dreamer.errors)")
    if extra:
        extra(p)
    args = p.parse_args(argv)
    args.inputs = {}
    return load(args.config, args.set), args


def parse_args_after(phase: int, flag: str, description: str,
                     argv: list[str] | None = None) -> tuple[Config, argparse.Namespace, Path, dict]:
    """The command line of the phase that starts from ``phase``'s final checkpoint, named by ``flag``
    (default: the run directory's). Returns (config, args, checkpoint path, checkpoint); the checkpoint is
    loaded first, so the config carries the model configs it was trained with before the run starts."""
    cfg, args = parse_args(description, argv, lambda p: p.add_argument(
        flag, dest="handoff", default=None, help=f"phase-{phase} checkpoint (default <run dir>/{FINAL[phase]})"))
    path = handoff_path(cfg, phase, args.handoff)
    ckpt = load_handoff(path, cfg, phase)
    args.inputs = input_record(path, ckpt, phase)
    return cfg, args, path, ckpt
