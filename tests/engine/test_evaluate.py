"""Figures for named sets: computed by a forward pass, or from logits the caller already has."""
import pytest
import torch

from engine.evaluate import evaluate_sets, predict_logits
from engine.nets import build_model, inference_copy


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_given_logits_give_the_figures_a_forward_pass_gives():
    torch.manual_seed(0)
    model = build_model("cnn", {"widths": [4, 8, 16]}).eval()
    test, field = _data(50, 1), _data(30, 2)
    computed = evaluate_sets(model, {"test": test, "field": field})
    logits = predict_logits(inference_copy(model), test[0])
    given = evaluate_sets(model, {"test": test, "field": field}, logits={"test": logits})
    assert given.keys() == computed.keys()
    for key, value in computed.items():
        if key.endswith("loss"):
            assert given[key] == pytest.approx(value, rel=1e-5), key
        else:
            assert given[key] == value, key
    assert given["test_n"] == 50 and given["field_n"] == 30


def test_given_logits_must_match_the_set():
    model = build_model("cnn", {"widths": [4, 8, 16]}).eval()
    with pytest.raises(ValueError, match="10 rows of logits for 50 labels"):
        evaluate_sets(model, {"test": _data(50, 1)}, logits={"test": torch.zeros(10, 10)})
    empty = evaluate_sets(model, {"field": (torch.zeros(0, 28, 28, dtype=torch.uint8), torch.zeros(0))})
    assert empty == {"field_accuracy": None, "field_n": 0}
