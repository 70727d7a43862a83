"""A training run draws from its own generators and leaves the caller's random state as it found it."""
import random

import torch

from engine.trainer import train

from .test_trainer import synthetic_digits, tiny_config


def run_with_dropout_and_augmentation(seed: int = 0):
    # The cnn has dropout (torch's global generator); augmentation and shuffles use the trainer's own.
    return train(tiny_config(epochs=1, augment=True, seed=seed), synthetic_digits(320))


def state_of(result) -> dict[str, torch.Tensor]:
    return result.model.state_dict()


def test_a_run_leaves_python_and_torch_global_random_state_alone():
    random.seed(1234)
    torch.manual_seed(1234)
    python_before, torch_before = random.getstate(), torch.get_rng_state()

    run_with_dropout_and_augmentation(seed=0)

    assert random.getstate() == python_before
    assert torch.equal(torch.get_rng_state(), torch_before)
    # What the site draws next is what it would have drawn without the run (e.g. the random MNIST digit).
    expected_python, expected_torch = random.Random(1234).random(), torch.rand(1, generator=torch.Generator().manual_seed(1234))
    assert random.random() == expected_python
    assert torch.equal(torch.rand(1), expected_torch)


def test_two_runs_with_seed_0_do_not_fix_what_comes_after_them():
    run_with_dropout_and_augmentation(seed=0)
    after_first = random.random(), torch.rand(1)
    run_with_dropout_and_augmentation(seed=0)
    after_second = random.random(), torch.rand(1)
    assert after_first[0] != after_second[0]
    assert not torch.equal(after_first[1], after_second[1])


def test_a_run_is_reproducible_whatever_the_global_state_before_it():
    torch.manual_seed(1)
    random.seed(1)
    a = run_with_dropout_and_augmentation(seed=3)
    torch.manual_seed(2)
    random.seed(2)
    torch.rand(1000)
    b = run_with_dropout_and_augmentation(seed=3)
    c = run_with_dropout_and_augmentation(seed=4)

    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    for key, value in state_of(a).items():
        assert torch.equal(value, state_of(b)[key]), key
    assert any(not torch.equal(value, state_of(c)[key]) for key, value in state_of(a).items())
