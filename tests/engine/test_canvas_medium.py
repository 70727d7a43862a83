"""The users' medium synthesised from glyphs: a zero crossed by a horizontal bar, and glyphs re-drawn as a
canvas draws them (skeleton, then a round pen of constant width): ``engine.augment``."""
import pytest
import torch

from engine.augment import (
    AugmentConfig,
    add_habits,
    augment_batch,
    canvas_strokes,
    measure,
    round_pen,
    segment_coverage,
    skeleton,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def line(p0, p1, width) -> torch.Tensor:
    return segment_coverage((1, 1, 28, 28), torch.tensor([p0], dtype=torch.float32),
                            torch.tensor([p1], dtype=torch.float32), torch.tensor([float(width)]))


def ring(width=3.0) -> torch.Tensor:
    ys = torch.arange(28).view(28, 1) + 0.5
    xs = torch.arange(28).view(1, 28) + 0.5
    r = (((xs - 14.5) / 6.0) ** 2 + ((ys - 14.5) / 9.5) ** 2).sqrt()
    return (width / 2 + 0.5 - (r - 1).abs() * 6.0).clamp(0, 1).view(1, 1, 28, 28)


def test_a_thick_stroke_thins_to_a_one_pixel_line_of_the_same_length():
    bar = line((6.5, 14.5), (21.5, 14.5), width=5)
    lines = skeleton(bar)
    columns = lines[0, 0].sum(dim=0)
    assert int(lines.sum(dim=(2, 3)).item()) >= 10  # it is still a long line
    assert columns.max() == 1  # one pixel across
    assert set(lines.unique().tolist()) <= {0.0, 1.0}


def test_a_ring_stays_a_closed_ring_when_thinned():
    lines = skeleton(ring(width=4.0))
    assert lines[0, 0, 14, 14] == 0  # the hole stays a hole
    # every row that crosses the oval still has ink on both sides
    for row in range(9, 20):
        ink = torch.nonzero(lines[0, 0, row]).flatten()
        assert len(ink) >= 2 and ink.min() < 14 < ink.max()


@pytest.mark.parametrize("width", [1.5, 2.5, 3.5])
def test_the_round_pen_draws_the_width_asked_for(width):
    lines = skeleton(line((6.5, 14.5), (21.5, 14.5), width=5))
    ink = round_pen(lines, torch.tensor([width]))
    across = ink[0, 0, :, 14].sum().item()  # ink summed across the stroke, in its middle
    assert across == pytest.approx(width, abs=0.6)


def test_the_pen_width_is_constant_whatever_the_original_stroke_was():
    # a stroke that swells from 1.5 to 5 px wide comes back with one width along its length
    swell = torch.maximum(line((6.5, 14.5), (14.5, 14.5), width=1.5), line((14.5, 14.5), (21.5, 14.5), width=5))
    redrawn = canvas_strokes(swell, AugmentConfig(canvas_pen=1.0, canvas_pen_width=(2.5, 2.5)), gen())
    left, right = redrawn[0, 0, :, 9].sum().item(), redrawn[0, 0, :, 19].sum().item()
    assert abs(left - right) < 0.5
    assert swell[0, 0, :, 19].sum().item() - swell[0, 0, :, 9].sum().item() > 2


def test_the_share_of_glyphs_redrawn_is_the_configured_share_and_the_rest_are_untouched():
    x = ring().repeat(400, 1, 1, 1)
    out = canvas_strokes(x, AugmentConfig(canvas_pen=0.3), gen())
    changed = (out != x).flatten(1).any(dim=1)
    assert changed.float().mean().item() == pytest.approx(0.3, abs=0.07)
    assert torch.equal(out[~changed], x[~changed])
    assert canvas_strokes(x, AugmentConfig(), gen()) is x  # off: the batch itself, no copy


def test_crossed_zero_gets_a_bar_across_its_hole():
    zero = ring()
    assert zero[0, 0, 14, 11:18].max() < 0.5
    outs = add_habits(zero.repeat(32, 1, 1, 1), torch.zeros(32, dtype=torch.long), AugmentConfig(crossed_zero=1.0), gen())
    # ink across the middle rows, from one side of the oval to the other
    middle = outs[:, 0, 11:18, 11:18]
    assert (middle.amax(dim=1) > 0.5).float().mean(dim=1).min() > 0.8
    # every result, bar and all, is brought back to the MNIST box
    boxes = [measure(o.unsqueeze(0)) for o in outs]
    assert all(19 <= max((b.bottom - b.top).item(), (b.right - b.left).item()) <= 22 for b in boxes)


def test_new_shares_and_widths_are_validated():
    with pytest.raises(ValueError, match="at most one"):
        AugmentConfig(slashed_zero=0.5, dotted_zero=0.2, crossed_zero=0.5)
    with pytest.raises(ValueError, match="canvas_pen"):
        AugmentConfig(canvas_pen=1.5)
    with pytest.raises(ValueError, match="canvas_pen_width"):
        AugmentConfig(canvas_pen_width=(3.0, 2.0))
    # configs stored as JSON come back with lists
    assert AugmentConfig(canvas_pen_width=[1.0, 2.0]).canvas_pen_width == (1.0, 2.0)


def test_whole_batches_with_the_medium_keep_shape_and_range():
    x = torch.cat([ring(), line((14.5, 4.5), (14.5, 24.5), width=2.5)]).repeat(32, 1, 1, 1)
    y = torch.tensor([0, 1]).repeat(32)
    out = augment_batch(x, AugmentConfig(canvas_pen=0.5, crossed_zero=0.5), gen(), labels=y)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
