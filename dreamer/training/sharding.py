"""The FSDP option (``<phase>.fsdp: true`` under torchrun): parameters, gradients and optimizer state
sharded across ranks with PyTorch's FSDP2 ``fully_shard``, for models that do not fit one device.

Units: every block of the model's block lists, every other direct child with parameters, then the root.
A call to any child (``agent.policy(h)``, ``agent.trunk(x)``) gathers that child's weights itself;
methods of the root other than ``forward`` that use its own parameters are registered by name
(``forward_methods``, e.g. the dynamics model's KV-cached ``forward_into``).

Checkpoints stay the plain, unsharded format: each save gathers full state dicts (a collective: every
rank calls :func:`model_state` / :func:`optimizer_state`, rank 0 writes), so a sharded run's checkpoint
loads in a single process and the other way round. The optimizer state of a sharded run is keyed by
parameter name (the layout of ``torch.distributed.checkpoint.state_dict``), a plain run's by number;
:func:`load_optimizer_state` reads both.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

log = logging.getLogger(__name__)


def _dcp():
    from torch.distributed.checkpoint import state_dict as dcp

    return dcp


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` or any module inside it was sharded by :func:`shard`."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in module.modules())


def shard(rt, model: nn.Module, enabled: bool, forward_methods: tuple[str, ...] = ()) -> bool:
    """``fully_shard`` ``model`` in place when ``enabled`` and launched by torchrun; returns whether it did.

    Call it before creating the optimizer (which must hold the sharded parameters) and instead of
    :func:`dreamer.training.runtime.wrap_model`'s DDP. Parameters stay fp32 (the master weights); bf16
    compute comes from the phase's ``bf16`` autocast as without FSDP.
    """
    if not enabled:
        return False
    if not rt.distributed:
        log.warning("fsdp=true ignored: a single process has nothing to shard across (launch with torchrun)")
        return False
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    with torch.no_grad():  # every rank starts from rank 0's weights, as DDP does (ranks seed differently)
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)
    units = _units(model)
    for m in units:  # innermost first: a block is its own unit before its parent claims the rest
        fully_shard(m)
    fully_shard(model)
    for name in forward_methods:
        register_fsdp_forward_method(model, name)
    # Declare ``model`` the root now: FSDP otherwise makes the first unit to run forward the root, and a
    # direct call to a child before the first full forward (diagnostics, held-out figures) would break it.
    model._get_fsdp_state()._lazy_init()
    # FSDP warns for every unit returning a view (our heads split their logits): harmless here, as nothing
    # edits those outputs in place; tests/test_resilience.py checks sharded training equals DDP's.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    name = type(model).__name__.removeprefix("FSDP")  # fully_shard swaps in an FSDP<name> class
    log.info("FSDP: %s sharded over %d ranks in %d units (+ root)", name, rt.world, len(units))
    return True


def _has_params(m: nn.Module, recurse: bool = True) -> bool:
    return any(True for _ in m.parameters(recurse=recurse))


def _units(module: nn.Module) -> list[nn.Module]:
    """Sub-modules to shard as their own units, innermost first: every element of a block list, every
    child with parameters; a child holding block lists is descended into, and is a unit itself only if
    parameters outside those blocks remain (e.g. the agent trunk's input projection)."""
    out: list[nn.Module] = []
    for child in module.children():
        if isinstance(child, nn.ModuleList):
            out += [m for m in child if _has_params(m)]
        elif any(isinstance(m, nn.ModuleList) for m in child.modules()):
            inner = _units(child)
            claimed = {p for m in inner for p in m.parameters()}
            out += inner
            if any(p not in claimed for p in child.parameters()):
                out.append(child)
        elif _has_params(child):
            out.append(child)
    return out


def _full_options(**kw):
    return _dcp().StateDictOptions(full_state_dict=True, **kw)


def model_state(module: nn.Module) -> dict:
    """The full (unsharded) state dict; for a sharded module a collective that every rank must call,
    whose result is complete on rank 0 (CPU tensors) and empty elsewhere."""
    if not is_sharded(module):
        return module.state_dict()
    return _dcp().get_model_state_dict(module, options=_full_options(cpu_offload=True))


def load_model_state(module: nn.Module, state: dict) -> None:
    """Load a full state dict (every rank holds it) into a plain or a sharded module."""
    if not is_sharded(module):
        module.load_state_dict(state)
        return
    _dcp().set_model_state_dict(module, state, options=_full_options())


def optimizer_state(owner: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Full optimizer state: ``opt.state_dict()`` for a plain owner, else the name-keyed layout gathered
    from every rank (a collective; complete on rank 0)."""
    if not is_sharded(owner):
        return opt.state_dict()
    return _dcp().get_optimizer_state_dict(owner, opt, options=_full_options(cpu_offload=True))


def _order(owner: nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """The names of the optimizer's parameters in the order ``opt.state_dict()`` numbers them."""
    names = {p: n for n, p in owner.named_parameters()}
    return [names[p] for g in opt.param_groups for p in g["params"]]


def _name_keyed(owner: nn.Module, opt: torch.optim.Optimizer, state: dict) -> dict:
    """A plain ``opt.state_dict()`` (parameters numbered in group order) rewritten with parameter names."""
    order = _order(owner, opt)
    groups = [dict(g, params=[order[i] for i in g["params"]]) for g in state["param_groups"]]
    return {"state": {order[i]: s for i, s in state["state"].items()}, "param_groups": groups}


def _id_keyed(owner: nn.Module, opt: torch.optim.Optimizer, state: dict) -> dict:
    """The inverse of :func:`_name_keyed`, for this optimizer's parameter order."""
    index = {n: i for i, n in enumerate(_order(owner, opt))}
    groups = [dict(g, params=[index[n] for n in g["params"]]) for g in state["param_groups"]]
    return {"state": {index[n]: s for n, s in state["state"].items()}, "param_groups": groups}


def load_optimizer_state(owner: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """Load a plain or a name-keyed full optimizer state into ``opt`` (over ``owner``'s parameters)."""
    name_keyed = any(isinstance(k, str) for k in state["state"]) or any(
        isinstance(p, str) for g in state["param_groups"] for p in g["params"])
    if not is_sharded(owner):
        opt.load_state_dict(_id_keyed(owner, opt, state) if name_keyed else state)
        return
    if not name_keyed:
        state = _name_keyed(owner, opt, state)
    _dcp().set_optimizer_state_dict(owner, opt, state, options=_full_options())


def owner_of(opt: torch.optim.Optimizer, models: dict[str, nn.Module]) -> nn.Module | None:
    """The model among ``models`` whose parameters the optimizer trains (None when none holds them all)."""
    params = {p for g in opt.param_groups for p in g["params"]}
    for m in models.values():
        if params <= set(m.parameters()):
            return m
    return None
