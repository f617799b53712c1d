"""``python -m diagnostics --phase N --config configs/x.yaml [--checkpoint ckpt.pt ...]``

Builds what the phase script would build (tokenizer, latent cache, models, phase-3 prior), loads the
checkpoints, draws one training batch and prints the report. Exit code 0 when nothing failed, 1 when a
check failed, 2 when the setup could not even be built (the message says why).

Checkpoints are read in the order given; a later one overrides the models of an earlier one
(``ckpt["models"][name]``). Without ``--checkpoint`` the run directory's standard files are used:
phase 1 the newest ``phase1_step*.pt``; phase 2 ``phase1_cosmos_final.pt`` then the newest
``phase2_step*.pt``; phase 3 both finals then the newest ``phase3_step*.pt``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path

from diagnostics.core import diagnose_phase
from diagnostics.report import FAIL, OK, WARN, Check

log = logging.getLogger("diagnostics")
TRAINED = {1: "dynamics", 2: "agent", 3: "agent"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m diagnostics", description=__doc__.split("\n\n")[1])
    p.add_argument("--phase", type=int, choices=(1, 2, 3), required=True)
    p.add_argument("--config", action="append", default=[], help="YAML preset (repeat to stack)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    p.add_argument("--checkpoint", action="append", default=[], help="checkpoint to load (repeatable)")
    p.add_argument("--batch-size", type=int, default=4, help="clips in the sample batch")
    p.add_argument("--split", choices=("train", "val"), default="train")
    p.add_argument("--step", type=int, default=None, help="treat the models as trained for this many steps")
    p.add_argument("--compact", action="store_true", help="skip the slow checks (tokenizer encode, import probe)")
    p.add_argument("--no-audit", action="store_true", help="skip the forward/backward gradient-flow audit")
    return p


def default_checkpoints(run_dir: Path, phase: int) -> list[Path]:
    from dreamer.pipeline.checkpoints import FINAL, PREFIX
    from dreamer.training.checkpoint import latest_checkpoint

    finals = [run_dir / FINAL[p] for p in range(1, phase)]
    out = [p for p in finals if p.is_file()]
    latest = latest_checkpoint(run_dir, PREFIX[phase])
    return out + ([latest] if latest else [])


def build_models(phase: int, cfg, tokenizer, cache, device) -> dict:
    from dreamer.dynamics import ShortcutForcingLoss
    from dreamer.pipeline.build import build_agent, build_dynamics, frozen

    models = {"tokenizer": tokenizer, "dynamics": build_dynamics(cfg, tokenizer, cache, device)}
    if phase == 1:
        models["loss"] = ShortcutForcingLoss(cfg.dynamics).to(device)
    else:
        frozen(models["dynamics"])
        models["agent"] = build_agent(cfg, tokenizer, cache, device)
    if phase == 3:
        models["prior"] = copy.deepcopy(models["agent"].policy)
    return models


def load_checkpoints(paths: list[Path], models: dict, cache, phase: int) -> tuple[int, list[Check]]:
    """Load every model found in the checkpoints; returns (step of the phase's trained model, checks)."""
    from dreamer.training.checkpoint import (
        CheckpointMismatchError,
        check_compatible,
        load_checkpoint,
        strip_compiled_prefix,
    )

    source: dict[str, str] = {}
    step, checks = 0, []
    for path in paths:
        ckpt = load_checkpoint(path)
        try:
            check_compatible(ckpt, cache, path)
        except CheckpointMismatchError as e:
            checks.append(Check("checkpoint/compatible", FAIL, Path(path).name, "same tokenizer, stats, actions", str(e)))
        for name, state in ckpt.get("models", {}).items():
            if name in models and name != "tokenizer":
                try:
                    models[name].load_state_dict(strip_compiled_prefix(state))
                except RuntimeError as e:
                    checks.append(Check(f"checkpoint/{name}", FAIL, Path(path).name, "state dict matches the config",
                                        f"{path}: {str(e).splitlines()[0]} - the config's model sizes differ from "
                                        "the ones the checkpoint was trained with"))
                    continue
                source[name] = Path(path).name
                if name == TRAINED[phase]:
                    step = int(ckpt.get("step", 0))
    if phase == 3:
        if "prior" not in source:  # pi_prior = the phase-2 policy, frozen
            models["prior"].load_state_dict(models["agent"].policy.state_dict())
            source["prior"] = f"copy of agent.policy ({source.get('agent', 'init')})"
        models["agent"].freeze_for_phase3()
        models["prior"].requires_grad_(False).eval()
    at_init = [n for n in models if n not in ("tokenizer", "loss") and n not in source and n != TRAINED[phase]]
    loaded = ", ".join(f"{n} <- {s}" for n, s in source.items()) or "nothing"
    checks.append(Check("checkpoint/loaded", WARN if at_init else OK, len(source), "every frozen model loaded",
                        f"{at_init} are at random initialisation: pass the earlier phase's checkpoint with "
                        f"--checkpoint (loaded: {loaded})" if at_init else ""))
    log.info("checkpoints: %s (step %d)", loaded, step)
    return step, checks


def main(argv: list[str] | None = None) -> int:
    from dreamer.config import load
    from dreamer.data.loader import ClipSampler
    from dreamer.pipeline.data import make_tokenizer, open_or_prepare
    from dreamer.training.runtime import Runtime, pick_device, seed_everything, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(0)
    try:
        cfg = load(args.config, args.set)
        device = pick_device(cfg.device)
        seed_everything(cfg.seed)  # as runtime.start(): a random-weight tokenizer gets the cache's identity
        tokenizer = make_tokenizer(cfg, device)
        cache = open_or_prepare(Runtime(cfg=cfg, device=device), tokenizer)
        models = build_models(args.phase, cfg, tokenizer, cache, device)
        paths = [Path(p) for p in args.checkpoint] or default_checkpoints(cfg.run_dir, args.phase)
        step, ckpt_checks = load_checkpoints(paths, models, cache, args.phase)
        names = cache.train_names if args.split == "train" else (cache.val_names or cache.train_names)
        batch = ClipSampler(cache, names, cfg.data.clip_len, args.batch_size, cfg.seed, 0, device).batch(0)
        run_cfgs = {2: {"rl_cfg": cfg.rl}, 3: {"rl_cfg": cfg.rl, "pmpo_cfg": cfg.pmpo}}.get(args.phase, {})
        report = diagnose_phase(args.phase, models, batch, device, cache=cache, compact=args.compact,
                                audit=not args.no_audit, step=args.step if args.step is not None else step,
                                **run_cfgs)  # the real losses use the run's discounts and PMPO settings
    except Exception as e:  # the setup itself is broken: one clear line, no traceback wall
        log.debug("setup failed", exc_info=True)
        print(f"diagnostics: cannot build the phase-{args.phase} setup: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    report.checks[:0] = ckpt_checks
    print(report.table())
    return 1 if report.failed else 0
