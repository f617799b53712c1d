"""The hallway between the phases (dreamer/pipeline): the cache a phase starts from, each model built once
from the config and the cache, the checkpoint names, the handoff from one phase to the next, the final save."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dreamer.config import load
from dreamer.data.episode import save_episode
from dreamer.pipeline.build import build_agent, build_dynamics, data_dims, frozen
from dreamer.pipeline.checkpoints import FINAL, PREFIX, WrongPhaseError, handoff_path, load_handoff, save_final
from dreamer.pipeline.cli import parse_args, parse_args_after
from dreamer.pipeline.data import open_or_prepare, prepare_data
from dreamer.training.checkpoint import (
    atomic_save,
    check_compatible,
    data_info,
    latest_checkpoint,
    load_checkpoint,
    payload,
    state_sha256,
)
from dreamer.training.runtime import Runtime, seed_everything

TEST_CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "test.yaml")


def _sets(tmp: Path) -> list[str]:
    return [f"checkpoint_root={tmp / 'ckpt'}", f"data.episodes_dir={tmp / 'eps'}", f"data.cache_dir={tmp / 'cache'}"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Three short episodes, the test overlay, the tokenizer and the cache as a phase script gets them."""
    from dreamer.data.synthetic import make_episode

    tmp = tmp_path_factory.mktemp("pipeline")
    for i in range(3):
        save_episode(tmp / "eps" / f"ep{i}.npz", make_episode(T=20 + 4 * i, seed=i))
    cfg = load([TEST_CONFIG], _sets(tmp))
    seed_everything(cfg.seed)
    rt = Runtime(cfg=cfg, device=torch.device("cpu"), run_dir=cfg.run_dir)
    tokenizer, cache = prepare_data(rt)
    return tmp, cfg, rt, tokenizer, cache


def test_models_take_their_data_sizes_from_the_tokenizer_and_cache(prepared):
    _, cfg, _, tokenizer, cache = prepared
    dims = data_dims(tokenizer, cache)
    assert dims == {"num_tokens": tokenizer.num_tokens, "latent_dim": tokenizer.channels,
                    "action_cards": list(cache.action_space.cards), "chunk_len": cache.chunk_len}
    dyn, agent = build_dynamics(cfg, tokenizer, cache, "cpu"), build_agent(cfg, tokenizer, cache, "cpu")
    for m in (dyn, agent):
        assert (m.num_tokens, m.latent_dim, m.action_cards, m.chunk_len) == tuple(dims.values())
    assert dyn.cfg == cfg.dynamics and agent.cfg == cfg.agent
    # a state dict saved from a torch.compile'd module loads into a fresh build
    compiled = {f"_orig_mod.{k}": v + 1 for k, v in agent.state_dict().items()}
    again = build_agent(cfg, tokenizer, cache, "cpu", state=compiled)
    assert all(torch.equal(v, agent.state_dict()[k] + 1) for k, v in again.state_dict().items())
    f = frozen(build_dynamics(cfg, tokenizer, cache, "cpu", state=dyn.state_dict()))
    assert not f.training and not any(p.requires_grad for p in f.parameters())


def test_an_existing_cache_is_opened_as_it_is(prepared):
    _, _cfg, rt, tokenizer, cache = prepared
    again = open_or_prepare(rt, tokenizer)
    assert again.names == cache.names and again.manifest == cache.manifest


def test_final_save_handoff_and_refusals(prepared, tmp_path):
    _, cfg, _, tokenizer, cache = prepared
    rt = Runtime(cfg=cfg, device=torch.device("cpu"), run_dir=tmp_path)
    dyn = build_dynamics(cfg, tokenizer, cache, "cpu")
    path = save_final(rt, 1, payload(cfg, 2, {"dynamics": dyn}, data_info=data_info(cache)))
    assert path == tmp_path / FINAL[1] == tmp_path / "phase1_cosmos_final.pt"
    assert latest_checkpoint(tmp_path, PREFIX[1]) == tmp_path / "phase1_step2.pt"  # a rerun resumes at the end
    assert load_checkpoint(path)["step"] == 2

    later = load([TEST_CONFIG], ["dynamics.d_model=16", "dynamics.num_heads=4"])  # another dynamics asked for
    later.checkpoint_root = str(tmp_path.parent)
    later.run = tmp_path.name
    assert handoff_path(later, 1, None) == path and handoff_path(later, 1, "x.pt") == Path("x.pt")
    ckpt = load_handoff(path, later, 1)
    assert later.dynamics == cfg.dynamics  # the trained model's config is adopted
    check_compatible(ckpt, cache, path)
    with pytest.raises(ValueError, match=r"lacks models \['agent'\].*phase 3 needs the phase2_final.pt"):
        load_handoff(path, later, 2)


@pytest.mark.parametrize("found", [2, 3, None])
def test_a_checkpoint_of_another_phase_is_refused_naming_its_phase(prepared, tmp_path, found):
    """Phase 2 given a phase-2 or phase-3 checkpoint (which also hold a dynamics model), or one that does
    not say its phase, as its phase-1 input: refused, naming the phase found, before the run starts."""
    _, cfg, _, tokenizer, cache = prepared
    models = {"dynamics": build_dynamics(cfg, tokenizer, cache, "cpu"), "agent": build_agent(cfg, tokenizer, cache, "cpu")}
    extra = {} if found is None else {"phase": found}
    p = atomic_save(payload(cfg, 3, models, data_info=data_info(cache), extra=extra), tmp_path / "x.pt")
    argv = ["--config", TEST_CONFIG, *[a for s in _sets(tmp_path) for a in ("--set", s)], "--checkpoint", str(p)]
    said = f"a phase-{found} checkpoint" if found else "a checkpoint that does not say its phase"
    with pytest.raises(WrongPhaseError, match=rf"{p}.* is {said}.*phase 2 starts from a phase-1 checkpoint"):
        parse_args_after(1, "--checkpoint", "phase 2", argv)
    assert not (tmp_path / "ckpt").exists()  # refused before the run folder is touched
    if found == 3:  # a phase-3 final given to phase 3 as its phase-2 input
        with pytest.raises(WrongPhaseError, match="is a phase-3 checkpoint .*train_phase3.py.*phase2_final.pt"):
            load_handoff(p, cfg, 2)


def test_command_line_of_a_later_phase_loads_its_checkpoint_first(prepared, tmp_path):
    _, cfg, _, tokenizer, cache = prepared
    dyn = build_dynamics(cfg, tokenizer, cache, "cpu")
    p1 = atomic_save(payload(cfg, 1, {"dynamics": dyn}, data_info=data_info(cache), extra={"phase": 1}),
                     tmp_path / "p1.pt")
    argv = ["--config", TEST_CONFIG, "--set", "dynamics.d_model=64", "--checkpoint", str(p1), "--no-diagnose"]
    got, args, path, ckpt = parse_args_after(1, "--checkpoint", "phase 2", argv)
    assert path == p1 and args.no_diagnose and ckpt["step"] == 1 and not args.fresh
    assert got.dynamics == cfg.dynamics  # not the d_model=64 asked on the command line
    # the run will remember where it started from: the path and a content hash of the handed-on models
    assert args.inputs == {"phase1": {"path": str(p1.resolve()), "sha256": state_sha256({"dynamics": dyn.state_dict()}),
                                      "step": 1}}
    plain, _ = parse_args("phase 1", ["--config", TEST_CONFIG, "--set", "phase1.steps=7"])
    assert plain.phase1.steps == 7 and plain.device == "cpu"
