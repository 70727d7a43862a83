"""Training gets its own torch threads (TRAINING_TORCH_THREADS); predictions keep INFERENCE_THREADS.

torch's thread count belongs to each thread, and a thread that never set one starts from the last count
set anywhere in the process. So a run must set its budget in the thread that trains it, and a serving
call its own, or whichever ran last decides for the other.
"""
from __future__ import annotations

import threading

import pytest
import torch

from classifier.inference import registry
from training.execution import training_threads
from training.executor import thread_executor
from training.models import TrainingRun

from .conftest import QUICK_RUN
from .test_thread_executor import wait_for

TRAINING = 3  # a count nothing else in the process uses


@pytest.fixture
def own_thread_count():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def threads_seen_by(serving) -> tuple[list[int], object]:
    """The torch thread counts the model's forward passes run with (a forward pre-hook)."""
    seen: list[int] = []
    handle = serving.module.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    return seen, handle


def in_thread(target) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


@pytest.mark.django_db
def test_a_serving_call_runs_with_inference_threads_while_a_run_trains_beside_it(shipped_versions, settings,
                                                                                 own_thread_count):
    settings.TRAINING_TORCH_THREADS = TRAINING
    settings.INFERENCE_THREADS = 1
    registry.clear()
    serving = registry.serving()
    seen, handle = threads_seen_by(serving)
    training_has_set, predicted = threading.Event(), threading.Event()
    in_training: dict[str, int] = {}

    def trainer() -> None:
        with training_threads() as budget:
            in_training["budget"] = budget
            training_has_set.set()
            assert predicted.wait(60)
            x = torch.randn(256, 256)
            x @ x  # an op with a parallel region after the prediction
            in_training["after_prediction"] = torch.get_num_threads()

    training = threading.Thread(target=trainer)
    training.start()
    try:
        assert training_has_set.wait(60)
        # A request thread started while the run trains (the last count set in the process is the run's).
        in_thread(lambda: serving.probabilities(torch.rand(1, 1, 28, 28)))
        # A thread that trained before (the inline executor) and then serves.
        torch.set_num_threads(TRAINING)
        serving.probabilities(torch.rand(2, 1, 28, 28))
    finally:
        predicted.set()
        training.join(60)
        handle.remove()

    assert seen and set(seen) == {1}
    assert in_training == {"budget": TRAINING, "after_prediction": TRAINING}


@pytest.mark.django_db
def test_the_training_budget_is_given_back_when_the_run_ends(settings, own_thread_count):
    settings.TRAINING_TORCH_THREADS = TRAINING
    torch.set_num_threads(1)
    with training_threads():
        assert torch.get_num_threads() == TRAINING
    assert torch.get_num_threads() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_thread_executor_trains_with_the_training_budget_after_predictions(shipped_versions, staff_client,
                                                                               mnist_settings, settings,
                                                                               own_thread_count):
    settings.TRAINING_EXECUTOR = "thread"
    settings.TRAINING_TORCH_THREADS = TRAINING
    settings.INFERENCE_THREADS = 1
    registry.clear()
    serving = registry.serving()
    serving.probabilities(torch.rand(1, 1, 28, 28))  # the site has served: the process's last count is 1

    response = staff_client.post("/api/retrain/", QUICK_RUN, format="json")
    assert response.status_code == 202
    run_id = response.json()["id"]
    wait_for(lambda: TrainingRun.objects.get(pk=run_id).status in TrainingRun.FINISHED, 120, "the run to finish")
    assert thread_executor().join(10)

    run = TrainingRun.objects.get(pk=run_id)
    assert run.status == "succeeded", run.error
    assert f"training with {TRAINING} torch threads" in run.log
    seen, handle = threads_seen_by(serving)
    try:
        in_thread(lambda: serving.probabilities(torch.rand(1, 1, 28, 28)))
    finally:
        handle.remove()
    assert seen and set(seen) == {1}
