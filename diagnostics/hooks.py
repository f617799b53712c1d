"""Forward hooks that watch one forward pass: which modules ran, in which order, whether grad mode
was on when they ran, and whether their outputs carried an autograd graph. The gradient-flow audit
uses this to say *why* a module's parameters got no gradient."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from typing_extensions import Self

from dreamer.training.runtime import unwrap


@dataclass
class Call:
    order: int  # index of the module's first call in the pass
    calls: int = 0
    grad_on: bool = False  # some call ran with grad mode on
    graph_out: bool = False  # some call with grad mode on returned a tensor that requires grad
    graphless_out: bool = False  # some call with grad mode on returned tensors, none requiring grad


def _has_graph(x, depth: int = 0) -> bool | None:
    """True / False when ``x`` holds tensors (some / none require grad), None when it holds none."""
    if torch.is_tensor(x):
        return x.requires_grad
    if depth > 4:
        return None
    items = x.values() if isinstance(x, dict) else x if isinstance(x, (list, tuple)) else ()
    found = [r for r in (_has_graph(i, depth + 1) for i in items) if r is not None]
    return any(found) if found else None


class ForwardRecorder:
    """``with ForwardRecorder(model_dict) as rec: loss = loss_fn()``; then ``rec.calls[name]``.

    Names are dotted and prefixed with the model_dict key (``agent.reward.mlp.out``).
    """

    def __init__(self, model_dict: dict[str, nn.Module]):
        self.modules: dict[str, nn.Module] = {}
        for key, module in model_dict.items():
            if isinstance(module, nn.Module) and key != "tokenizer":  # the tokenizer never runs in a loss
                for n, sub in unwrap(module).named_modules():
                    self.modules[f"{key}.{n}" if n else key] = sub
        self.calls: dict[str, Call] = {}
        self._handles: list = []

    def _pre(self, name: str):
        def hook(module, args):
            call = self.calls.get(name)
            if call is None:
                call = self.calls[name] = Call(order=len(self.calls))
            call.calls += 1
            call.grad_on |= torch.is_grad_enabled()
        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            if not torch.is_grad_enabled():  # grad mode at exit equals grad mode at entry
                return
            graph = _has_graph(output)
            call = self.calls[name]
            call.graph_out |= graph is True
            call.graphless_out |= graph is False
        return hook

    def __enter__(self) -> Self:
        for name, m in self.modules.items():
            self._handles.append(m.register_forward_pre_hook(self._pre(name)))
            self._handles.append(m.register_forward_hook(self._post(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def subtree(self, name: str) -> list[tuple[str, Call]]:
        """Calls of ``name`` and of its submodules, in call order."""
        pre = name + "."
        found = [(n, c) for n, c in self.calls.items() if n == name or n.startswith(pre)]
        return sorted(found, key=lambda nc: nc[1].order)

    def why_no_grad(self, name: str) -> str:
        """The likeliest reason why the parameters under module ``name`` received no gradient."""
        calls = self.subtree(name)
        if not calls:
            return "it was never called by the loss: the loss does not use it (or calls a copy of it)"
        own = self.calls.get(name)
        if own is not None and own.grad_on and own.graphless_out and not own.graph_out:
            return ("its forward ran with grad mode on but returned no graph: its forward() runs under "
                    "@torch.no_grad() / a no_grad block, or it returns .detach()-ed / .data outputs")
        if not any(c.grad_on for _, c in calls):
            return ("it ran with grad mode off: the code calling it wraps it in torch.no_grad() (a decorator "
                    "or a with-block); keep no_grad for pure inference / teacher passes only")
        inner = [(n, c) for n, c in calls if c.grad_on and c.graphless_out and not c.graph_out]
        if inner:
            return (f"{inner[0][0]} ran with grad mode on but returned no graph (a @torch.no_grad() forward or "
                    "a detach inside it)")
        return ("its outputs carried a graph but no gradient came back: they are cut off downstream "
                "(.detach(), .data, .item(), .numpy(), or a no_grad block) before they reach the loss")
