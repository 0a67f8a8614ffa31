"""Low-rank updates (LoRA) of a module's linear layers, in named sets that can be switched on and off.

``LowRankUpdates(target)`` finds every ``nn.Linear`` of ``target``; :meth:`add` creates a set of
updates under a key: for each linear layer ``y = x W^T + b`` a pair ``A`` (r, in), ``B`` (out, r) so
that, while the set is active, ``y = x W^T + b + scale * (x A^T) B^T`` with ``scale = alpha / r``.
``B`` starts at zero, so a new set changes nothing until it trains. The updates are added by forward
hooks, so ``target``'s own parameters keep their names (checkpoints of the plain module still load)
and, with no set active, ``target`` computes exactly what it computed before (bit for bit).

:meth:`using` activates one set for a block of code (``None``: none). Parameters live in
``self.sets[key]`` (a ParameterDict of ``"<layer>.a"``-style names with the dots replaced), so a state
dict holds ``sets.<key>.<layer>__a`` entries.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn


def _safe(name: str) -> str:
    return name.replace(".", "__")


class LowRankUpdates(nn.Module):
    """Keyed low-rank updates of every ``nn.Linear`` in ``target`` (see the module docstring).

    ``target`` is not registered as a submodule (it belongs to its owner); the hooks stay on it."""

    def __init__(self, target: nn.Module, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.sets = nn.ModuleDict()
        self.ranks: dict[str, int] = {}
        self.active: str | None = None
        self._shapes: dict[str, tuple[int, int]] = {}
        for name, module in target.named_modules():
            if isinstance(module, nn.Linear):
                self._shapes[name] = (module.in_features, module.out_features)
                module.register_forward_hook(partial(self._hook, name))

    def clear(self) -> None:
        """Drop every set (the hooks stay, doing nothing)."""
        self.sets, self.ranks, self.active = nn.ModuleDict(), {}, None

    def add(self, key: str, rank: int, device: torch.device | str | None = None) -> int:
        """A new set of rank ``rank`` under ``key`` on ``device`` (B = 0: no change yet); returns its
        parameter count."""
        if key in self.sets:
            raise ValueError(f"low-rank set {key!r} exists already")
        if rank < 1:
            raise ValueError(f"a low-rank update needs rank >= 1, got {rank}")
        params = nn.ParameterDict()
        for name, (n_in, n_out) in self._shapes.items():
            params[_safe(name) + "__a"] = nn.Parameter(torch.randn(rank, n_in, device=device) / math.sqrt(n_in))
            params[_safe(name) + "__b"] = nn.Parameter(torch.zeros(n_out, rank, device=device))
        self.sets[key], self.ranks[key] = params, rank
        return sum(p.numel() for p in params.values())

    @contextmanager
    def using(self, key: str | None):
        """Inside the block the set ``key`` is active (``None``: none); the previous state comes back after."""
        if key is not None and key not in self.sets:
            raise KeyError(f"no low-rank set {key!r}")
        before, self.active = self.active, key
        try:
            yield
        finally:
            self.active = before

    def _hook(self, name: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self.active is None:
            return None
        params = self.sets[self.active]
        a, b = params[_safe(name) + "__a"], params[_safe(name) + "__b"]
        scale = self.alpha / self.ranks[self.active]
        return output + scale * (inputs[0].to(a.dtype) @ a.t() @ b.t()).to(output.dtype)
