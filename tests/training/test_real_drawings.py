"""The shipped flagship on real pen-drawn digits (development writers), through the site's pipeline.

Skipped where the recorded digits are absent: they are looked up at ``<repo>/../shared/data/strokes-dev``
or in the folder named by ``STROKES_DEV``. Each digit is rendered once (one canvas form, pen, size and
place per digit, cycling through the forms) and preprocessed as the site does. The thresholds sit a
little under what the shipped checkpoint measures, so a regression shows.
"""
import os
from pathlib import Path

import pytest
import torch

from bench.strokes import rendered_set
from engine.calibration import expected_calibration_error
from engine.checkpoint import load_checkpoint, model_from_checkpoint
from engine.nets import inference_copy
from engine.serving import checkpoint_temperature, checkpoint_tta, predict_probabilities

REPO = Path(__file__).resolve().parents[2]
STROKES_DEV = Path(os.environ.get("STROKES_DEV") or REPO.parent / "shared" / "data" / "strokes-dev")

# The shipped cnn measures, on one rendering per digit (seed 0), as served (T and test-time views):
# 98.31% overall; ced 98.68, tos 99.82, uqb 97.49, val 97.74; digit 1 93.98, digit 8 96.39, the others
# 98.5-99.7; ECE 0.84% (`python bench/real_drawings.py --variants 1`). The bars sit a little lower.
MINIMUM_OVERALL = 0.978
MINIMUM_PER_GROUP = {"ced": 0.98, "tos": 0.99, "uqb": 0.965, "val": 0.97}
MINIMUM_PER_DIGIT = {1: 0.92, 8: 0.95}
MINIMUM_OTHER_DIGITS = 0.975
MAXIMUM_ECE = 0.02

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def drawings():
    path = STROKES_DEV / "strokes.json.gz"
    if not path.is_file():
        pytest.skip(f"no recorded digits at {path} (set STROKES_DEV to the folder holding strokes.json.gz)")
    return rendered_set(path, seed=0, variants=1)


@pytest.fixture(scope="module")
def flagship(shipped_dir):
    checkpoint = load_checkpoint(shipped_dir / "cnn.pt")
    return inference_copy(model_from_checkpoint(checkpoint)), checkpoint_temperature(checkpoint), checkpoint_tta(checkpoint)


@pytest.fixture(scope="module")
def answers(drawings, flagship):
    """The probabilities as served: the checkpoint's temperature and test-time views."""
    model, temperature, tta = flagship
    return torch.cat([predict_probabilities(model, drawings.x[i : i + 512], temperature=temperature, tta=tta)
                      for i in range(0, len(drawings.x), 512)])


def test_flagship_reads_real_drawings_in_every_writer_group(drawings, answers):
    correct = answers.argmax(dim=1) == drawings.y
    assert correct.float().mean().item() >= MINIMUM_OVERALL
    groups = drawings.group
    for group, minimum in MINIMUM_PER_GROUP.items():
        mask = torch.tensor([g == group for g in groups])
        assert mask.any(), group
        accuracy = correct[mask].float().mean().item()
        assert accuracy >= minimum, f"{group}: {accuracy:.4f} < {minimum}"


def test_flagship_reads_every_digit_including_the_habit_ones(drawings, answers):
    correct = answers.argmax(dim=1) == drawings.y
    for digit in range(10):
        accuracy = correct[drawings.y == digit].float().mean().item()
        minimum = MINIMUM_PER_DIGIT.get(digit, MINIMUM_OTHER_DIGITS)
        assert accuracy >= minimum, f"digit {digit}: {accuracy:.4f} < {minimum}"


def test_flagship_confidence_is_calibrated_on_real_drawings(drawings, answers, flagship):
    _, temperature, _ = flagship
    assert temperature != 1.0  # the shipped flagship carries its fitted temperature
    assert expected_calibration_error(answers, drawings.y) <= MAXIMUM_ECE
