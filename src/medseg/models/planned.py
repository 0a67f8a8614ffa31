"""A 3D model that carries its :class:`~medseg.data.planning.Plan` in its weights.

The plan (target spacing, normalisation, patch size, classes) is kept as UTF-8 JSON in the buffer
``plan_json``, so every checkpoint preprocesses as its training did and knows its classes. A model using
:class:`CarriesPlan` defines ``_fit_plan(plan)``: its output becomes background + the plan's classes (and a U-Net
takes the plan's pooling).
"""

from __future__ import annotations

import json

import torch


class CarriesPlan:
    """Mixin of an ``nn.Module``: ``plan``, ``set_plan``, ``adopt_state`` over the ``plan_json`` buffer."""

    def _init_plan(self) -> None:
        self.register_buffer("plan_json", torch.zeros(0, dtype=torch.uint8))

    @property
    def plan(self):
        """The 3D :class:`~medseg.data.planning.Plan` this model was trained with, or None."""
        return decode_plan(self.plan_json)

    def set_plan(self, plan) -> None:
        """Keep ``plan`` in the weights; the output becomes background + the plan's classes (a new,
        untrained last layer when their number changes; a U-Net rebuilt when the plan pools otherwise)."""
        data = json.dumps(plan.to_dict(), sort_keys=True).encode("utf-8")
        self.plan_json = torch.tensor(list(data), dtype=torch.uint8, device=self.plan_json.device)
        self._fit_plan(plan)

    def adopt_state(self, state: dict[str, torch.Tensor]) -> None:
        """Before ``state`` (a checkpoint) loads strictly: take its plan, and so its number of classes. The
        plan's bytes are kept as stored (a plan written before a field was added re-encodes longer)."""
        stored = state.get("plan_json")
        plan = decode_plan(stored)
        if plan is not None:
            self.set_plan(plan)
            self.plan_json = stored.detach().to(device=self.plan_json.device, dtype=torch.uint8).clone()

    def _fit_plan(self, plan) -> None:
        raise NotImplementedError


def decode_plan(stored: torch.Tensor | None):
    """The Plan held by a ``plan_json`` buffer (UTF-8 JSON bytes), or None for an absent or empty one."""
    if stored is None or stored.numel() == 0:
        return None
    from medseg.data.planning import Plan

    return Plan.from_dict(json.loads(bytes(stored.tolist()).decode("utf-8")))
