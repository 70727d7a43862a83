"""The trainer's one-cycle schedule and optimizers compute what torch.optim's do, step for step."""
import pytest
import torch
from torch import nn

from engine.optim import AdamW, NesterovSGD, OneCycle, make_optimizer


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _groups(model: nn.Module, decay: float) -> list[tuple[list[nn.Parameter], float]]:
    weights = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    return [(weights, decay), (others, 0.0)]


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(100 + step)
    x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    return nn.functional.cross_entropy(model(x), y)


@pytest.mark.parametrize("warmup", [0.15, 0.3])
def test_the_schedule_is_torchs_one_cycle(warmup):
    total = 40
    model = _model(0)
    reference = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.3, total_steps=total, pct_start=warmup,
                                                    anneal_strategy="cos", div_factor=20.0, final_div_factor=200.0)
    schedule = OneCycle(0.3, total, warmup)
    for step in range(total + 1):
        group = reference.param_groups[0]
        assert schedule.at(step) == pytest.approx((group["lr"], group["momentum"]), rel=1e-12), step
        if step < total:
            reference.step()
            scheduler.step()
    assert schedule.at(0)[0] == pytest.approx(0.3 / 20) and max(schedule.at(s)[0] for s in range(total)) <= 0.3
    with pytest.raises(ValueError):
        schedule.at(total + 1)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_the_optimizers_follow_torchs_trajectory(name):
    total, decay = 30, 5e-3
    ours, theirs = _model(1), _model(1)
    optimizer = make_optimizer(name, _groups(ours, decay))
    assert isinstance(optimizer, NesterovSGD if name == "sgd" else AdamW)
    groups = [{"params": params, "weight_decay": d} for params, d in _groups(theirs, decay)]
    reference = (torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True) if name == "sgd"
                 else torch.optim.AdamW(groups, lr=0.1))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.2, total_steps=total, pct_start=0.2,
                                                    anneal_strategy="cos", div_factor=20.0, final_div_factor=200.0,
                                                    cycle_momentum=name == "sgd")
    schedule = OneCycle(0.2, total, 0.2)
    for step in range(total):
        optimizer.zero_grad()
        _loss(ours, step).backward()
        optimizer.step(*schedule.at(step))
        reference.zero_grad()
        _loss(theirs, step).backward()
        reference.step()
        scheduler.step()
    moved = False
    for mine, reference_param, start in zip(ours.parameters(), theirs.parameters(), _model(1).parameters()):
        torch.testing.assert_close(mine, reference_param, rtol=1e-5, atol=1e-6)
        moved |= not torch.allclose(mine, start)
    assert moved  # the comparison is between trained weights, not two untouched copies


def test_unknown_optimizers_and_empty_schedules_are_refused():
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("rmsprop", [])
    with pytest.raises(ValueError, match="at least one step"):
        OneCycle(0.1, 0, 0.2)
