"""The one-cycle schedule and Nesterov SGD the trainer uses, as plain functions of the step.

They compute what ``torch.optim.SGD(nesterov=True)`` under ``torch.optim.lr_scheduler.OneCycleLR``
(cosine annealing, momentum cycled) computes, step for step (``tests/engine/test_optim.py`` holds
them to it). They exist because the first ``torch.optim`` optimizer a process makes imports
``torch._dynamo`` (1.0-1.5 s on the 2-core machines the docs measure on), which a short training
run, such as the time-to-99% benchmark, would spend on something it never uses. AdamW (the small
architectures' recipes) still comes from ``torch.optim``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

BASE_MOMENTUM = 0.85  # the momentum at the peak learning rate (torch's OneCycleLR defaults)
MAX_MOMENTUM = 0.95  # the momentum at the start and the end of the cycle


@dataclass(frozen=True)
class OneCycle:
    """Learning rate and momentum at each step: a cosine ramp from ``peak / div_factor`` up to
    ``peak`` over the first ``warmup`` share of the steps, then a cosine down to
    ``peak / div_factor / final_div_factor``; the momentum moves the opposite way."""

    peak: float
    total_steps: int
    warmup: float
    div_factor: float = 20.0
    final_div_factor: float = 200.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError("a schedule needs at least one step")

    def at(self, step: int) -> tuple[float, float]:
        """(learning rate, momentum) for the update after ``step`` updates were made (0 = the first)."""
        if not 0 <= step <= self.total_steps:
            raise ValueError(f"step {step} is outside the schedule's {self.total_steps} steps")
        start = self.peak / self.div_factor
        end = start / self.final_div_factor
        turn = float(self.warmup * self.total_steps) - 1
        last = self.total_steps - 1
        if step <= turn:
            share = step / turn
            return _cosine(start, self.peak, share), _cosine(MAX_MOMENTUM, BASE_MOMENTUM, share)
        share = (step - turn) / (last - turn)
        return _cosine(self.peak, end, share), _cosine(BASE_MOMENTUM, MAX_MOMENTUM, share)


def _cosine(start: float, end: float, share: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * share) + 1)


class NesterovSGD:
    """SGD with Nesterov momentum and per-group (coupled) weight decay, as ``torch.optim.SGD``
    computes it with ``nesterov=True`` and no dampening; the caller sets the rate and momentum of
    each step (``step(lr, momentum)``)."""

    def __init__(self, groups: Sequence[tuple[Sequence[torch.nn.Parameter], float]]) -> None:
        self.groups = [(list(params), float(decay)) for params, decay in groups]
        self.buffers: dict[torch.nn.Parameter, torch.Tensor] = {}

    def zero_grad(self) -> None:
        for params, _ in self.groups:
            for param in params:
                param.grad = None

    @torch.no_grad()
    def step(self, lr: float, momentum: float) -> None:
        for params, decay in self.groups:
            for param in params:
                if param.grad is None:
                    continue
                grad = param.grad.add(param, alpha=decay) if decay else param.grad
                buffer = self.buffers.get(param)
                if buffer is None:
                    buffer = self.buffers[param] = grad.clone()
                else:
                    buffer.mul_(momentum).add_(grad)
                param.add_(grad.add(buffer, alpha=momentum), alpha=-lr)


class AdamW:
    """``torch.optim.AdamW`` behind the same ``step(lr, momentum)`` as ``NesterovSGD`` (its betas are
    not cycled, so the momentum is ignored)."""

    def __init__(self, groups: Sequence[tuple[Sequence[torch.nn.Parameter], float]]) -> None:
        self.optimizer = torch.optim.AdamW([{"params": list(params), "weight_decay": float(decay)}
                                            for params, decay in groups])

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, lr: float, momentum: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()


def make_optimizer(name: str, groups: Sequence[tuple[Sequence[torch.nn.Parameter], float]]) -> NesterovSGD | AdamW:
    """``"sgd"`` (Nesterov momentum) or ``"adamw"`` over ``(parameters, weight decay)`` groups."""
    if name == "sgd":
        return NesterovSGD(groups)
    if name == "adamw":
        return AdamW(groups)
    raise ValueError(f"unknown optimizer {name!r}; known: sgd, adamw")
