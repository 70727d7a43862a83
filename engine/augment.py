"""Whole-batch data augmentation on the training device (no per-sample Python, no PIL).

People draw digits rotated, sized and placed a little differently from MNIST, and with thicker or
thinner pens. Each batch gets a random affine warp (rotation, scale, shear, shift) and a random
stroke-thickness change (grey-level dilation or erosion, blended by a random amount).

People also write some digits in ways MNIST (written by American clerks and students) hardly has:
zeros with a slash or a dot inside, ones with a flag and / or a base serif, sevens crossed through
the stem, fours open at the top. ``habit_variants`` makes those from the MNIST glyphs themselves,
for a configurable share of the images of each class: it finds each glyph's ink box, stroke width
and stem on the device, draws the added strokes as anti-aliased line segments (coverage from the
distance to the segment), or erases a gap, and scales the result back to MNIST's 20 px box with its
centre of mass in the middle, as the site's preprocessing does to a drawing. The variants join the
batch as extra samples (``habits_extra``) or replace their originals (``add_habits``). With every
share at 0 (or no labels) the glyphs pass through unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# MNIST's size normalisation (see ``engine.preprocessing``): the longer side of the ink box is 20 px
# and the centre of mass sits at 14.5 in continuous coordinates (pixel i covers [i, i + 1)).
BOX_SIZE = 20.0
CENTRE = 14.5
INK = 0.35  # a pixel at least this dark is part of a stroke when measuring glyphs
# A one's flag: degrees below the horizontal, length as a share of the stem, and how far it may
# reach sideways (share of the stem): a 7's bar reaches across the whole glyph.
FLAG_ANGLE = (20.0, 65.0)
FLAG_LENGTH = (0.25, 0.60)
FLAG_REACH = 0.45
# A base serif goes only under a nearly upright stem (sideways lean at most this share of its height):
# a leaning stroke standing on a base is how a 2 without its curl looks.
SERIF_MAX_LEAN = 0.25


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 12.0
    scale: tuple[float, float] = (0.85, 1.1)
    aspect: float = 0.12  # horizontal stretch range +- (people draw narrower or wider)
    shear_deg: float = 10.0
    shift_px: float = 2.0
    thickness: float = 1.0  # max blend towards dilation (+) or erosion (-); 0 turns it off
    thickness_p: float = 0.7  # share of images whose stroke thickness is changed
    # Writing habits: the share of the images of a class drawn with the habit (0 = never).
    slashed_zero: float = 0.0  # a slash through the oval, often beyond it (a Scandinavian / programmer's 0)
    dotted_zero: float = 0.0  # a dot in the middle of the oval
    crossed_zero: float = 0.0  # a horizontal bar across the middle of the oval (read as an 8 without it)
    flagged_one: float = 0.0  # a short slanted flag at the top of the stem (the European 1)
    serif_one: float = 0.0  # a horizontal base under the stem (independent of the flag)
    crossed_seven: float = 0.0  # a short bar across the middle of the stem
    open_four: float = 0.0  # the top where the diagonal meets the upright left open
    habits_extra: bool = False  # a glyph with a habit joins the batch as an extra sample (True) or replaces it
    # The users' medium: the share of glyphs re-drawn as a canvas draws them (thinned to their skeleton,
    # then stroked with a round pen of constant width, ``canvas_pen_width`` px at 28x28), 0 = never.
    canvas_pen: float = 0.0
    canvas_pen_width: tuple[float, float] = (1.2, 3.4)
    # The one's flag: degrees below the horizontal (range), length as a share of the stem (range), and
    # the most it may reach sideways (share of the stem). See FLAG_ANGLE, FLAG_LENGTH, FLAG_REACH.
    flag_angle: tuple[float, float] = FLAG_ANGLE
    flag_length: tuple[float, float] = FLAG_LENGTH
    flag_reach: float = FLAG_REACH

    def __post_init__(self) -> None:
        shares = {
            "slashed_zero": self.slashed_zero, "dotted_zero": self.dotted_zero, "crossed_zero": self.crossed_zero,
            "flagged_one": self.flagged_one, "canvas_pen": self.canvas_pen,
            "serif_one": self.serif_one, "crossed_seven": self.crossed_seven, "open_four": self.open_four,
        }
        for name, value in shares.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a share in [0, 1]")
        if self.slashed_zero + self.dotted_zero + self.crossed_zero > 1.0:
            raise ValueError("slashed_zero + dotted_zero + crossed_zero cannot exceed 1 (a zero gets at most one)")
        object.__setattr__(self, "canvas_pen_width", tuple(float(v) for v in self.canvas_pen_width))
        thinnest, thickest = self.canvas_pen_width
        if not (len(self.canvas_pen_width) == 2 and 0.5 <= thinnest <= thickest <= 6.0):
            raise ValueError("canvas_pen_width must be [thinnest, thickest] px within 0.5-6")
        # Stored configs come back from JSON with lists where tuples were.
        object.__setattr__(self, "flag_angle", tuple(float(v) for v in self.flag_angle))
        object.__setattr__(self, "flag_length", tuple(float(v) for v in self.flag_length))
        low, high = self.flag_angle
        if not (len(self.flag_angle) == 2 and 0.0 <= low <= high <= 80.0):
            raise ValueError("flag_angle must be [low, high] degrees below the horizontal, within 0-80")
        shortest, longest = self.flag_length
        if not (len(self.flag_length) == 2 and 0.0 < shortest <= longest <= 1.0):
            raise ValueError("flag_length must be [shortest, longest] shares of the stem, within (0, 1]")
        if not 0.0 < self.flag_reach <= 1.0:
            raise ValueError("flag_reach must be a share of the stem in (0, 1]")

    @property
    def has_habits(self) -> bool:
        return any((self.slashed_zero, self.dotted_zero, self.crossed_zero, self.flagged_one, self.serif_one,
                    self.crossed_seven, self.open_four))


# --------------------------------------------------------------------------- geometry of a batch of glyphs


@dataclass
class Glyphs:
    """Measurements of ``[N, 1, H, W]`` glyphs, each a tensor ``[N]`` (pixel coordinates, continuous)."""

    top: torch.Tensor
    bottom: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    width: torch.Tensor  # typical stroke width in pixels

    @property
    def height(self) -> torch.Tensor:
        return (self.bottom - self.top).clamp_min(1.0)

    @property
    def centre(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.left + self.right) / 2, (self.top + self.bottom) / 2


def _first_last(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first and last True along the last dim of ``[N, L]`` (0 and L-1 when none)."""
    n = mask.shape[-1]
    as_float = mask.float()
    first = as_float.argmax(dim=-1)
    last = n - 1 - as_float.flip(-1).argmax(dim=-1)
    empty = ~mask.any(dim=-1)
    return torch.where(empty, 0, first).float(), torch.where(empty, n - 1, last).float()


def measure(images: torch.Tensor) -> Glyphs:
    """Ink box (pixel edges) and stroke width of each glyph, all on the images' device."""
    ink = images[:, 0] > INK
    top, bottom = _first_last(ink.any(dim=2))
    left, right = _first_last(ink.any(dim=1))
    # stroke width: inked pixels per run, along rows and along columns; the smaller is across the stroke
    area = ink.sum(dim=(1, 2)).float()
    runs_rows = (ink[:, :, 1:] & ~ink[:, :, :-1]).sum(dim=(1, 2)) + ink[:, :, 0].sum(dim=1)
    runs_cols = (ink[:, 1:, :] & ~ink[:, :-1, :]).sum(dim=(1, 2)) + ink[:, 0, :].sum(dim=1)
    width = torch.minimum(area / runs_rows.clamp_min(1), area / runs_cols.clamp_min(1)).clamp(1.2, 4.5)
    return Glyphs(top=top, bottom=bottom + 1, left=left, right=right + 1, width=width)


def ink_x_at(images: torch.Tensor, row: torch.Tensor, band: float | torch.Tensor = 1.5) -> torch.Tensor:
    """The ink-weighted mean x (continuous) of each glyph in the rows within ``band`` of ``row``."""
    n, _, h, w = images.shape
    band = torch.as_tensor(band, device=images.device, dtype=images.dtype).expand(n)
    ys = torch.arange(h, device=images.device, dtype=images.dtype) + 0.5
    xs = torch.arange(w, device=images.device, dtype=images.dtype) + 0.5
    weight_rows = ((ys.view(1, h) - row.view(-1, 1)).abs() <= band.view(-1, 1)).to(images.dtype)  # [N, H]
    ink = images[:, 0] * weight_rows.unsqueeze(2)  # [N, H, W]
    mass = ink.sum(dim=(1, 2))
    x = (ink.sum(dim=1) * xs).sum(dim=1) / mass.clamp_min(1e-6)
    return torch.where(mass > 1e-6, x, torch.full_like(x, w / 2))


def segment_coverage(
    shape: torch.Size | tuple[int, ...], p0: torch.Tensor, p1: torch.Tensor, width: torch.Tensor
) -> torch.Tensor:
    """Anti-aliased ink of one line segment per image: ``[N, 1, H, W]`` in [0, 1].

    ``p0``, ``p1`` are ``[N, 2]`` endpoints (x, y) in continuous pixel coordinates, ``width`` ``[N]``
    the pen width. A pixel's ink is how far its centre lies inside the pen's outline, ramped over one
    pixel (a round pen: the ends are round caps).
    """
    n, _, h, w = shape
    device, dtype = p0.device, p0.dtype
    ys = torch.arange(h, device=device, dtype=dtype).view(1, h, 1) + 0.5
    xs = torch.arange(w, device=device, dtype=dtype).view(1, 1, w) + 0.5
    d = p1 - p0
    length2 = (d * d).sum(dim=1).clamp_min(1e-6).view(n, 1, 1)
    px, py = xs - p0[:, 0].view(n, 1, 1), ys - p0[:, 1].view(n, 1, 1)
    t = ((px * d[:, 0].view(n, 1, 1) + py * d[:, 1].view(n, 1, 1)) / length2).clamp(0.0, 1.0)
    dx, dy = px - t * d[:, 0].view(n, 1, 1), py - t * d[:, 1].view(n, 1, 1)
    distance = (dx * dx + dy * dy).sqrt()
    return (width.view(n, 1, 1) / 2 + 0.5 - distance).clamp(0.0, 1.0).unsqueeze(1)


def renormalize(images: torch.Tensor, box: float = BOX_SIZE) -> torch.Tensor:
    """Scale each glyph so the longer side of its ink box is ``box`` px and move its centre of mass to
    the middle, as MNIST (and the site's preprocessing) did: a glyph that grew a stroke is brought
    back to the size and place a drawing of it would get."""
    n, _, h, w = images.shape
    glyphs = measure(images)
    side = torch.maximum(glyphs.bottom - glyphs.top, glyphs.right - glyphs.left).clamp_min(1.0)
    scale = box / side
    ys = torch.arange(h, device=images.device, dtype=images.dtype) + 0.5
    xs = torch.arange(w, device=images.device, dtype=images.dtype) + 0.5
    mass = images.sum(dim=(1, 2, 3)).clamp_min(1e-6)
    cy = (images.sum(dim=(1, 3)) * ys).sum(dim=1) / mass
    cx = (images.sum(dim=(1, 2)) * xs).sum(dim=1) / mass
    # output continuous coordinate c_out maps to input c_in = centre_in + (c_out - CENTRE) / scale;
    # in grid_sample's normalised coordinates (u = 2c/size - 1, align_corners=False):
    inv = 1.0 / scale
    tx = (2.0 / w) * (cx + (w / 2 - CENTRE) * inv) - 1.0
    ty = (2.0 / h) * (cy + (h / 2 - CENTRE) * inv) - 1.0
    zero = torch.zeros_like(inv)
    theta = torch.stack([torch.stack([inv, zero, tx], dim=1), torch.stack([zero, inv, ty], dim=1)], dim=1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------- the habits


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=like.device, generator=generator, dtype=like.dtype) * (hi - lo) + lo


def _points(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([x, y], dim=1)


def slash_strokes(glyphs: Glyphs, generator: torch.Generator | None, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Endpoints of a slash through each oval: steep (45-90 degrees), mostly rising to the right,
    through the middle, each end stopping inside the oval or running up to 45% of its height beyond."""
    n = len(glyphs.top)
    cx, cy = glyphs.centre
    h, w = glyphs.height, (glyphs.right - glyphs.left).clamp_min(1.0)
    angle = _uniform(n, 45.0, 90.0, like, generator) * (math.pi / 180)
    lean = torch.where(torch.rand(n, device=like.device, generator=generator) < 0.85, 1.0, -1.0).to(like.dtype)
    dx, dy = torch.cos(angle) * lean, -torch.sin(angle)  # upwards (y grows down), to the right when lean=1
    # half-length that reaches the box's edge, then each end moved by its own share of the height
    reach = torch.minimum((h / 2) / torch.sin(angle), (w / 2) / torch.cos(angle).clamp_min(1e-3))
    ext_up = reach + _uniform(n, -0.15, 0.45, like, generator) * h
    ext_down = reach + _uniform(n, -0.15, 0.45, like, generator) * h
    ox = cx + _uniform(n, -0.08, 0.08, like, generator) * w
    oy = cy + _uniform(n, -0.05, 0.05, like, generator) * h
    return _points(ox - dx * ext_down, oy - dy * ext_down), _points(ox + dx * ext_up, oy + dy * ext_up)


def dot_strokes(glyphs: Glyphs, generator: torch.Generator | None, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A dot near the middle of each oval: a very short stroke."""
    n = len(glyphs.top)
    cx, cy = glyphs.centre
    h, w = glyphs.height, (glyphs.right - glyphs.left).clamp_min(1.0)
    x = cx + _uniform(n, -0.08, 0.08, like, generator) * w
    y = cy + _uniform(n, -0.08, 0.08, like, generator) * h
    angle = _uniform(n, 0.0, math.pi, like, generator)
    half = _uniform(n, 0.0, 0.06, like, generator) * h
    hx, hy = half * torch.cos(angle), half * torch.sin(angle)
    return _points(x - hx, y - hy), _points(x + hx, y + hy)


def bar_strokes(glyphs: Glyphs, generator: torch.Generator | None, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A nearly horizontal bar (within 15 degrees) through the middle of each oval, each end stopping a
    little inside the oval or running up to 30% of its width beyond: a zero crossed as some people cross it."""
    n = len(glyphs.top)
    cx, cy = glyphs.centre
    h, w = glyphs.height, (glyphs.right - glyphs.left).clamp_min(1.0)
    tilt = _uniform(n, -15.0, 15.0, like, generator) * (math.pi / 180)
    dx, dy = torch.cos(tilt), torch.sin(tilt)
    y = cy + _uniform(n, -0.10, 0.10, like, generator) * h
    left = w / 2 + _uniform(n, -0.15, 0.30, like, generator) * w
    right = w / 2 + _uniform(n, -0.15, 0.30, like, generator) * w
    return _points(cx - dx * left, y - dy * left), _points(cx + dx * right, y + dy * right)


def stem(images: torch.Tensor, glyphs: Glyphs) -> tuple[torch.Tensor, torch.Tensor]:
    """The top and bottom ends ``[N, 2]`` of each glyph's stem, from the ink in its top and bottom rows."""
    band = (glyphs.width / 2).clamp(1.0, 2.0)
    top_y = glyphs.top + band
    bottom_y = glyphs.bottom - band
    top = _points(ink_x_at(images, top_y, band), glyphs.top + 0.5)
    bottom = _points(ink_x_at(images, bottom_y, band), glyphs.bottom - 0.5)
    return top, bottom


def flag_strokes(
    top: torch.Tensor,
    bottom: torch.Tensor,
    generator: torch.Generator | None,
    like: torch.Tensor,
    *,
    angle_deg: tuple[float, float] = FLAG_ANGLE,
    length_share: tuple[float, float] = FLAG_LENGTH,
    reach: float = FLAG_REACH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A flag from the top of each stem, down to the left at ``angle_deg`` below the horizontal
    (default 20-65 degrees), ``length_share`` of the stem's length (25-60%) but reaching at most
    ``reach`` of it sideways (45%): shorter than the stem, so the stem stays the dominant stroke (a 7's
    bar is long and nearly horizontal)."""
    n = len(top)
    length = (top - bottom).norm(dim=1).clamp_min(1.0)
    angle = _uniform(n, angle_deg[0], angle_deg[1], like, generator) * (math.pi / 180)
    flag = _uniform(n, length_share[0], length_share[1], like, generator) * length
    flag = torch.minimum(flag, reach * length / torch.cos(angle))
    direction = torch.stack([-torch.cos(angle), torch.sin(angle)], dim=1)  # left and down (y grows down)
    return top, top + direction * flag.unsqueeze(1)


def serif_strokes(
    top: torch.Tensor, bottom: torch.Tensor, generator: torch.Generator | None, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A nearly horizontal base under each stem: 35-80% of the stem's length, about centred on it.
    (``add_habits`` draws it only under nearly upright stems, see ``SERIF_MAX_LEAN``.)"""
    n = len(top)
    length = (top - bottom).norm(dim=1).clamp_min(1.0)
    span = _uniform(n, 0.35, 0.80, like, generator) * length
    centre = bottom[:, 0] + _uniform(n, -0.15, 0.15, like, generator) * span
    tilt = _uniform(n, -8.0, 8.0, like, generator) * (math.pi / 180)
    hx, hy = torch.cos(tilt) * span / 2, torch.sin(tilt) * span / 2
    y = bottom[:, 1]
    return _points(centre - hx, y - hy), _points(centre + hx, y + hy)


def cross_strokes(
    images: torch.Tensor, glyphs: Glyphs, generator: torch.Generator | None, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A short bar across each seven's stem, at 45-65% of its height: 25-50% of the height long."""
    n = len(glyphs.top)
    h = glyphs.height
    y = glyphs.top + _uniform(n, 0.45, 0.65, like, generator) * h
    x = ink_x_at(images, y, 1.0) + _uniform(n, -0.08, 0.08, like, generator) * h
    span = _uniform(n, 0.25, 0.50, like, generator) * h
    tilt = _uniform(n, -10.0, 10.0, like, generator) * (math.pi / 180)
    hx, hy = torch.cos(tilt) * span / 2, torch.sin(tilt) * span / 2
    return _points(x - hx, y - hy), _points(x + hx, y + hy)


def enclosed(images: torch.Tensor, level: float = 0.2) -> torch.Tensor:
    """Background pixels ``[N, 1, H, W]`` (bool) that the border cannot reach without crossing ink: the
    holes of loops. Found by growing the border's background through background, 8-connected."""
    background = images <= level
    reached = torch.zeros_like(images)
    reached[..., 0, :] = 1.0
    reached[..., -1, :] = 1.0
    reached[..., :, 0] = 1.0
    reached[..., :, -1] = 1.0
    free = background.to(images.dtype)
    reached = reached * free
    for _ in range(0, images.shape[-1] + images.shape[-2], 4):
        grown = reached
        for _ in range(4):
            grown = F.max_pool2d(grown, 3, stride=1, padding=1) * free
        if torch.equal(grown, reached):
            break
        reached = grown
    return background & (reached == 0)


def open_top_eraser(images: torch.Tensor, glyphs: Glyphs, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """How much ink to keep ``[N, 1, H, W]`` to open each closed four at the top, and which fours are
    closed ``[N]``: a gap cut in the diagonal (the hole's left wall) just below the top corner of the
    triangle's hole, where the diagonal meets the upright. Fours that are already open (most of MNIST's) are left alone."""
    n, _, h, w = images.shape
    hole = enclosed(images)[:, 0]
    closed = hole.sum(dim=(1, 2)) >= 3
    ys = torch.arange(h, device=images.device, dtype=images.dtype).view(1, h, 1) + 0.5
    xs = torch.arange(w, device=images.device, dtype=images.dtype).view(1, 1, w) + 0.5
    top_row, _ = _first_last(hole.any(dim=2))
    in_row = hole & ((ys - 0.5) == top_row.view(n, 1, 1))
    hx = (in_row * xs).sum(dim=(1, 2)) / in_row.sum(dim=(1, 2)).clamp_min(1)
    hy = top_row + 0.5
    radius = glyphs.width * _uniform(n, 0.45, 0.7, images, generator)
    cx = hx - glyphs.width * _uniform(n, 0.6, 0.9, images, generator)
    cy = hy + glyphs.width * _uniform(n, 0.0, 0.6, images, generator)
    distance = ((xs - cx.view(n, 1, 1)) ** 2 + (ys - cy.view(n, 1, 1)) ** 2).sqrt()
    return (distance - radius.view(n, 1, 1)).clamp(0.0, 1.0).unsqueeze(1), closed


def habit_variants(
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    *,
    eligible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of the float ``[N,1,H,W]`` glyphs (in [0,1]) get a writing habit, and how they look with it:
    ``(index [K], variants [K,1,H,W])``. Each class's configured share is drawn (only where ``eligible``,
    when given); the variants are re-normalised to MNIST's box and centre."""
    n, device = images.shape[0], images.device
    none = (torch.zeros(0, dtype=torch.long, device=device), images[:0])
    if not cfg.has_habits or n == 0:
        return none
    labels = labels.to(device)
    ok = torch.ones(n, dtype=torch.bool, device=device) if eligible is None else eligible.to(device)

    def draw() -> torch.Tensor:
        return torch.rand(n, device=device, generator=generator)

    u_zero, u_flag, u_serif, u_seven, u_four = draw(), draw(), draw(), draw(), draw()
    slashed = ok & (labels == 0) & (u_zero < cfg.slashed_zero)
    dotted = ok & (labels == 0) & (u_zero >= cfg.slashed_zero) & (u_zero < cfg.slashed_zero + cfg.dotted_zero)
    barred = (ok & (labels == 0) & (u_zero >= cfg.slashed_zero + cfg.dotted_zero)
              & (u_zero < cfg.slashed_zero + cfg.dotted_zero + cfg.crossed_zero))
    flagged = ok & (labels == 1) & (u_flag < cfg.flagged_one)
    serifed = ok & (labels == 1) & (u_serif < cfg.serif_one)
    crossed = ok & (labels == 7) & (u_seven < cfg.crossed_seven)
    opened = ok & (labels == 4) & (u_four < cfg.open_four)
    chosen = torch.nonzero(slashed | dotted | barred | flagged | serifed | crossed | opened).flatten()
    if chosen.numel() == 0:
        return none
    # Only the chosen few (a few percent of a batch) are measured, drawn on and re-normalised.
    sub = images[chosen]
    slashed, dotted, barred, flagged, serifed, crossed, opened = (
        mask[chosen] for mask in (slashed, dotted, barred, flagged, serifed, crossed, opened)
    )
    m = len(chosen)
    glyphs = measure(sub)
    out = sub
    if bool(opened.any()):
        keep, closed = open_top_eraser(sub, glyphs, generator)
        opened = opened & closed
        out = torch.where(opened.view(m, 1, 1, 1), out * keep, out)
    pen = glyphs.width * _uniform(m, 0.8, 1.15, sub, generator)
    top, bottom = stem(sub, glyphs)
    serifed = serifed & ((top[:, 0] - bottom[:, 0]).abs() <= SERIF_MAX_LEAN * (bottom[:, 1] - top[:, 1]))
    # Every kind of stroke is laid out for every chosen glyph (they are few), then drawn in one go
    # where it applies: [kinds, m] endpoints and widths -> one coverage call.
    segments = [
        (slashed, *slash_strokes(glyphs, generator, sub), pen),
        (dotted, *dot_strokes(glyphs, generator, sub), pen * 1.6),
        (barred, *bar_strokes(glyphs, generator, sub), pen),
        (flagged, *flag_strokes(top, bottom, generator, sub, angle_deg=cfg.flag_angle,
                                length_share=cfg.flag_length, reach=cfg.flag_reach), pen),
        (serifed, *serif_strokes(top, bottom, generator, sub), pen),
        (crossed, *cross_strokes(sub, glyphs, generator, sub), pen),
    ]
    where = torch.stack([s[0] for s in segments])  # [kinds, m]
    if bool(where.any()):
        kinds = len(segments)
        p0 = torch.cat([s[1] for s in segments])
        p1 = torch.cat([s[2] for s in segments])
        width = torch.cat([s[3] for s in segments])
        ink = segment_coverage((kinds * m, 1, *sub.shape[-2:]), p0, p1, width).view(kinds, m, 1, *sub.shape[-2:])
        ink = (ink * where.view(kinds, m, 1, 1, 1).to(ink.dtype)).amax(dim=0)
        out = torch.maximum(out, ink)
    changed = slashed | dotted | barred | flagged | serifed | crossed | opened
    if not bool(changed.any()):  # chosen only for habits that did not fit (an open four, a leaning base)
        return none
    return chosen[changed], renormalize(out[changed]).to(images.dtype)


def add_habits(
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    *,
    eligible: torch.Tensor | None = None,
) -> torch.Tensor:
    """Float ``[N,1,H,W]`` glyphs in [0,1] with their labels -> the same with writing habits added to
    the configured share of each class (see ``habit_variants``). Images that get no habit are
    returned bit for bit."""
    index, variants = habit_variants(images, labels, cfg, generator, eligible=eligible)
    if index.numel() == 0:
        return images
    result = images.clone()
    result[index] = variants
    return result


# --------------------------------------------------------------------------- the users' medium


def _neighbours(mask: torch.Tensor) -> list[torch.Tensor]:
    """The 8 neighbours P2..P9 of every pixel of ``[N, 1, H, W]`` (0/1 floats), clockwise from north."""
    padded = F.pad(mask, (1, 1, 1, 1))
    h, w = mask.shape[-2:]
    offsets = ((0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0), (0, 0))  # (row, col) in the padding
    return [padded[..., r : r + h, c : c + w] for r, c in offsets]


def skeleton(images: torch.Tensor, level: float = INK, max_iterations: int = 12) -> torch.Tensor:
    """Each glyph of ``[N, 1, H, W]`` thinned to a one-pixel skeleton (0/1 floats), the whole batch at
    once: Zhang and Suen's two sub-iterations, repeated until nothing changes."""
    mask = (images > level).to(images.dtype)
    for _ in range(max_iterations):
        before = mask
        for step in (0, 1):
            p2, p3, p4, p5, p6, p7, p8, p9 = _neighbours(mask)
            ring = (p2, p3, p4, p5, p6, p7, p8, p9, p2)
            count = p2 + p3 + p4 + p5 + p6 + p7 + p8 + p9
            transitions = sum((1 - a) * b for a, b in zip(ring[:-1], ring[1:]))
            if step == 0:
                side = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                side = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = (mask > 0) & (count >= 2) & (count <= 6) & (transitions == 1) & side
            mask = mask * (~remove).to(mask.dtype)
        if torch.equal(mask, before):
            break
    return mask


def round_pen(lines: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Stroke one-pixel ``lines`` ``[N, 1, H, W]`` with a round pen of ``width`` px ``[N]``, anti-aliased
    over one pixel: a pixel's ink is how far its centre lies inside the pen around the nearest line pixel."""
    n = lines.shape[0]
    reach = int(math.ceil(float(width.max()) / 2 + 0.5))
    padded = F.pad(lines, (reach, reach, reach, reach))
    h, w = lines.shape[-2:]
    half = width.view(n, 1, 1, 1) / 2 + 0.5
    ink = torch.zeros_like(lines)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            weight = (half - math.hypot(dx, dy)).clamp(0.0, 1.0)
            if not bool((weight > 0).any()):
                continue
            shifted = padded[..., reach + dy : reach + dy + h, reach + dx : reach + dx + w]
            ink = torch.maximum(ink, shifted * weight)
    return ink


def canvas_strokes(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    """``cfg.canvas_pen`` of the glyphs re-drawn as a canvas draws: the skeleton stroked with a round pen of
    constant width; the rest returned as they were. A glyph whose skeleton comes out empty stays too."""
    n = images.shape[0]
    if cfg.canvas_pen <= 0 or n == 0:
        return images
    chosen = torch.nonzero(torch.rand(n, device=images.device, generator=generator) < cfg.canvas_pen).flatten()
    if chosen.numel() == 0:
        return images
    sub = images[chosen]
    lines = skeleton(sub)
    width = _uniform(len(chosen), *cfg.canvas_pen_width, sub, generator)
    redrawn = round_pen(lines, width)
    kept = lines.sum(dim=(1, 2, 3)) > 0
    result = images.clone()
    result[chosen[kept]] = redrawn[kept].to(images.dtype)
    return result


# --------------------------------------------------------------------------- the other augmentations


def stroke_thickness(images: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Thicken (amount > 0) or thin (amount < 0) strokes of ``[N,1,H,W]`` images, per image.

    Uses 3x3 grey-level dilation / erosion (max-pooling), blended linearly by ``|amount|`` in [0, 1]
    so thickness varies continuously.
    """
    dilated = F.max_pool2d(images, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-images, 3, stride=1, padding=1)
    a = amount.view(-1, 1, 1, 1)
    thick = images + a.clamp(min=0) * (dilated - images)
    return thick + (-a).clamp(min=0) * (eroded - images)


def random_affine(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    n, device = images.shape[0], images.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, device=device, generator=generator) * (hi - lo) + lo

    angle = uniform(-cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180)
    shear = uniform(-cfg.shear_deg, cfg.shear_deg) * (math.pi / 180)
    scale = uniform(*cfg.scale)
    aspect = uniform(-cfg.aspect, cfg.aspect).exp()
    sx, sy = scale * aspect.sqrt(), scale / aspect.sqrt()
    # shift in normalized coordinates: 2 px of a 28 px image is 2 * 2/28
    tx = uniform(-cfg.shift_px, cfg.shift_px) * (2.0 / images.shape[-1])
    ty = uniform(-cfg.shift_px, cfg.shift_px) * (2.0 / images.shape[-2])
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward map: rotate(shear(scale(p))) + t; grid_sample wants the inverse (output -> input).
    a11, a12 = sx * cos, sy * (cos * torch.tan(shear) - sin)
    a21, a22 = sx * sin, sy * (sin * torch.tan(shear) + cos)
    det = a11 * a22 - a12 * a21
    i11, i12, i21, i22 = a22 / det, -a12 / det, -a21 / det, a11 / det
    theta = torch.stack(
        [
            torch.stack([i11, i12, -(i11 * tx + i12 * ty)], dim=1),
            torch.stack([i21, i22, -(i21 * tx + i22 * ty)], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _thickness_and_affine(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    images = canvas_strokes(images, cfg, generator)
    if cfg.thickness > 0 and cfg.thickness_p > 0:
        n = images.shape[0]
        amount = (torch.rand(n, device=images.device, generator=generator) * 2 - 1) * cfg.thickness
        apply = torch.rand(n, device=images.device, generator=generator) < cfg.thickness_p
        images = stroke_thickness(images, amount * apply)
    return random_affine(images, cfg, generator).clamp_(0, 1)


def augment_batch(
    images: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    *,
    labels: torch.Tensor | None = None,
    eligible: torch.Tensor | None = None,
) -> torch.Tensor:
    """Augment float ``[N,1,28,28]`` images in [0,1]; returns a new tensor of the same shape.

    With ``labels``, writing habits first replace the glyphs they are drawn on (see ``add_habits``;
    ``eligible`` limits them to some images); then thickness, then the affine warp.
    """
    if labels is not None:
        images = add_habits(images, labels, cfg, generator, eligible=eligible)
    return _thickness_and_affine(images, cfg, generator)


def augment_labelled_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    *,
    eligible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch, augmented: ``(images, labels)``.

    With ``cfg.habits_extra`` each glyph given a writing habit joins the batch as an extra sample and
    its plain original stays, so the model sees every MNIST glyph as often as without habits (the
    batch grows by a few percent); otherwise the habit replaces the glyph. ``eligible`` limits habits
    to some images (MNIST glyphs, not users' drawings). Then thickness and the affine warp, per image.
    """
    if cfg.habits_extra:
        index, variants = habit_variants(images, labels, cfg, generator, eligible=eligible)
        if index.numel():
            images = torch.cat([images, variants])
            labels = torch.cat([labels, labels[index]])
    else:
        images = add_habits(images, labels, cfg, generator, eligible=eligible)
    return _thickness_and_affine(images, cfg, generator), labels
