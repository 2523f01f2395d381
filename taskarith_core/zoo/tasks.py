"""The zoo's tasks: class names, prompt templates and a generator per task, in two styles.

``pretrain=False`` draws a task's own images (fine-tuning and evaluation); ``pretrain=True``
draws the same concepts shifted (other fonts, outlines, inverted colours, other sizes) for
contrastive pretraining, so that zero-shot accuracy on the tasks is moderate, as real CLIP's is on
the 8-task benchmark. The control set ("symbols") is drawn in one style only: its test split is a
held-out slice of the pretraining distribution, the role ImageNet plays for negation in the papers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from . import render as R

__all__ = ["CONTROL_TASK", "TASKS", "TaskDef", "draw"]

Generator = Callable[[np.ndarray, np.random.Generator, bool], torch.Tensor]

TASK_FONTS = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "STIXGeneral.ttf"]
TASK_FONTS += ["DejaVuSans-Bold.ttf", "cmr10.ttf"]
PRETRAIN_FONTS = ["DejaVuSans-Oblique.ttf", "DejaVuSerif-BoldItalic.ttf", "cmtt10.ttf"]
PRETRAIN_FONTS += ["STIXGeneralBolIta.ttf", "cmss10.ttf"]

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LETTERS = list("ABEGHKMRSW")
SYMBOLS = ["?", "!", "#", "$", "%", "&", "@", "+", "=", "*"]
COLOURS = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.75, 0.2),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.9, 0.1),
    "orange": (1.0, 0.55, 0.05),
    "purple": (0.55, 0.15, 0.75),
    "pink": (1.0, 0.55, 0.75),
    "cyan": (0.1, 0.85, 0.9),
    "brown": (0.5, 0.3, 0.1),
    "white": (0.97, 0.97, 0.97),
}


@dataclass(frozen=True)
class TaskDef:
    """One classification task: label names, evaluation templates, and how to draw it."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]  #: evaluation prompts; pretraining captions use other templates
    draw: Generator


#: fraction of pretraining images drawn with the tasks' colour polarity (the rest are inverted)
SAME_POLARITY = 0.3
#: fraction of pretraining glyphs and shapes drawn as outlines
OUTLINED = 0.5


def _style(rng: np.random.Generator, n: int, pretrain: bool) -> np.ndarray:
    """Per image: dark background (the tasks' style) or, for part of pretraining, inverted."""
    if not pretrain:
        return np.ones(n, dtype=bool)
    return rng.random(n) < SAME_POLARITY


def _font_glyphs(chars: list[str], labels: np.ndarray, rng, pretrain: bool) -> torch.Tensor:
    fonts = PRETRAIN_FONTS if pretrain else TASK_FONTS
    chosen = [fonts[i] for i in rng.integers(0, len(fonts), len(labels))]
    mask = R.glyph_mask(chosen, [chars[i] for i in labels])
    if pretrain:
        mask = torch.where(
            torch.from_numpy(rng.random(len(labels)) < OUTLINED)[:, None, None, None],
            R.outline(mask, 2),
            mask,
        )
    return R.colourise(
        R.warp(mask, rng, rotate=20), rng, dark_background=_style(rng, len(labels), pretrain)
    )


def _printed_digits(labels, rng, pretrain):
    return _font_glyphs([str(i) for i in range(10)], labels, rng, pretrain)


def _letters(labels, rng, pretrain):
    return _font_glyphs(LETTERS, labels, rng, pretrain)


def _symbols(labels, rng, pretrain):
    # One style only: the control set is part of the pretraining distribution.
    return _font_glyphs(SYMBOLS, labels, rng, pretrain=True)


@lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[torch.Tensor, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    return F.interpolate(
        images, size=(R.HI, R.HI), mode="bilinear", align_corners=False
    ), bunch.target


def _handwritten(labels, rng, pretrain, sources: np.ndarray | None = None):
    """scikit-learn's 8x8 handwritten digits, upsampled; ``sources`` restricts the source images."""
    images, target = _sklearn_digits()
    pool = np.arange(len(target)) if sources is None else sources
    picks = np.empty(len(labels), dtype=np.int64)
    for digit in range(10):
        rows = np.flatnonzero(labels == digit)
        candidates = pool[target[pool] == digit]
        picks[rows] = rng.choice(candidates, len(rows))
    mask = images[torch.from_numpy(picks)]
    warped = R.warp(mask, rng, rotate=15, scale=(0.75, 1.0))
    return R.colourise(warped, rng, _style(rng, len(labels), pretrain))


SHAPES = ["circle", "square", "triangle", "diamond", "cross", "star", "ring", "hexagon"]


def _shape_masks(labels: np.ndarray) -> torch.Tensor:
    x, y = R.grid(len(labels))
    r = (x**2 + y**2).sqrt()
    polys = {
        "triangle": np.array([[0, -0.75], [0.75, 0.6], [-0.75, 0.6]]),
        "star": R.star_polygon(5, 0.33),
        "hexagon": R.star_polygon(3, 0.7, 0.7),  # 6 vertices on one radius
    }
    masks = torch.zeros(len(labels), 1, R.HI, R.HI)
    for k, name in enumerate(SHAPES):
        rows = torch.from_numpy(np.flatnonzero(labels == k))
        if len(rows) == 0:
            continue
        if name in polys:
            masks[rows] = R.polygon_mask([polys[name]])[0]
            continue
        xs, ys, rs = x[rows], y[rows], r[rows]
        shape = {
            "circle": rs < 0.7,
            "square": torch.maximum(xs.abs(), ys.abs()) < 0.6,
            "diamond": xs.abs() + ys.abs() < 0.8,
            "cross": (torch.minimum(xs.abs(), ys.abs()) < 0.2)
            & (torch.maximum(xs.abs(), ys.abs()) < 0.75),
            "ring": (rs < 0.7) & (rs > 0.42),
        }[name]
        masks[rows] = shape.float()[:, None]
    return masks


def _shapes(labels, rng, pretrain):
    mask = _shape_masks(labels)
    if pretrain:
        outlined = torch.from_numpy(rng.random(len(labels)) < OUTLINED)[:, None, None, None]
        mask = torch.where(outlined, R.outline(mask, 2), mask)
    warped = R.warp(mask, rng, rotate=30, scale=(0.6, 1.0))
    return R.colourise(warped, rng, _style(rng, len(labels), pretrain))


TEXTURES = ["horizontal stripes", "vertical stripes", "diagonal stripes", "checkerboard"]
TEXTURES += ["polka dots", "grid", "noise"]


def _textures(labels, rng, pretrain):
    n = len(labels)
    x, y = R.grid(n)
    lo, hi = (3.0, 5.0) if pretrain else (5.5, 9.0)  # pretraining: coarser periods
    freq = torch.from_numpy(rng.uniform(lo, hi, n).astype(np.float32))[:, None, None] * np.pi
    phase = torch.from_numpy(rng.uniform(0, 2 * np.pi, (n, 2)).astype(np.float32))
    px, py = x * freq + phase[:, 0, None, None], y * freq + phase[:, 1, None, None]
    patterns = [
        torch.sin(py) > 0,
        torch.sin(px) > 0,
        torch.sin((px + py) / 1.4) > 0,
        (torch.sin(px) > 0) ^ (torch.sin(py) > 0),
        torch.cos(px) * torch.cos(py) > 0.5,
        (torch.cos(px) > 0.8) | (torch.cos(py) > 0.8),
        torch.from_numpy(rng.random((n, R.HI // 4, R.HI // 4)) > 0.5)
        .repeat_interleave(4, 1)
        .repeat_interleave(4, 2),
    ]
    label_t = torch.from_numpy(labels)[:, None, None]
    mask = torch.zeros(n, R.HI, R.HI)
    for k, pattern in enumerate(patterns):
        mask = torch.where(label_t == k, pattern.float(), mask)
    small = F.avg_pool2d(mask[:, None], 2)
    return R.colourise(small, rng, dark_background=_style(rng, len(labels), pretrain))


def _colours(labels, rng, pretrain):
    n = len(labels)
    shape_ids = rng.integers(0, 4, n) if not pretrain else rng.integers(4, 8, n)
    mask = R.warp(_shape_masks(shape_ids), rng, rotate=45, scale=(0.5, 1.0), shift=0.2)
    base = np.array(list(COLOURS.values()))[labels]
    fg = np.clip(base + rng.uniform(-0.06, 0.06, (n, 3)), 0, 1)
    grey = rng.uniform(0.25, 0.5, (n, 1)) if not pretrain else rng.uniform(0.0, 0.15, (n, 1))
    image = R.colourise(mask, rng, dark_background=True, fg=fg)
    # A neutral grey background keeps the colour the only cue; pretraining uses near-black.
    bg = torch.from_numpy((grey * 255).astype(np.float32))[:, :, None, None]
    m = mask.expand(-1, 3, -1, -1)
    return (image.float() * m + bg * (1 - m)).round().to(torch.uint8)


COUNTS = ["one dot", "two dots", "three dots", "four dots", "five dots", "six dots"]
COUNTS += ["seven dots", "eight dots"]


def _counting(labels, rng, pretrain):
    n = len(labels)
    x, y = R.grid(1)
    masks = torch.zeros(n, 1, R.HI, R.HI)
    radius = (0.14, 0.2) if not pretrain else (0.09, 0.12)
    for i, label in enumerate(labels):
        centres: list[np.ndarray] = []
        rad = rng.uniform(*radius)
        while len(centres) < label + 1:
            c = rng.uniform(-0.8, 0.8, 2)
            if all(np.hypot(*(c - o)) > 2.3 * rad for o in centres):
                centres.append(c)
        for cx, cy in centres:
            if pretrain:  # squares instead of dots
                blob = torch.maximum((x - cx).abs(), (y - cy).abs()) < rad
            else:
                blob = (x - cx) ** 2 + (y - cy) ** 2 < rad**2
            masks[i, 0] = torch.maximum(masks[i, 0], blob[0].float())
    return R.colourise(
        F.avg_pool2d(masks, 2), rng, dark_background=_style(rng, len(labels), pretrain)
    )


DIRECTIONS = ["east", "south east", "south", "south west", "west", "north west", "north"]
DIRECTIONS += ["north east"]


def _arrows(labels, rng, pretrain):
    shaft = 0.1 if not pretrain else 0.05
    arrow = np.array(
        [
            [-0.75, -shaft],
            [0.2, -shaft],
            [0.2, -0.4],
            [0.8, 0],
            [0.2, 0.4],
            [0.2, shaft],
            [-0.75, shaft],
        ]
    )
    mask = R.polygon_mask([arrow]).expand(len(labels), -1, -1, -1).contiguous()
    warped = R.warp(mask, rng, rotate=12, scale=(0.6, 1.0), angles=labels * 45.0)
    return R.colourise(warped, rng, dark_background=_style(rng, len(labels), pretrain))


def _t(*templates: str) -> tuple[str, ...]:
    return tuple(templates)


TASKS: dict[str, TaskDef] = {
    t.name: t
    for t in [
        TaskDef(
            "digits",
            tuple(NUMBERS),
            _t("a handwritten digit {}.", "a photo of the number {}.", "a scribbled {}."),
            _handwritten,
        ),
        TaskDef(
            "printed_digits",
            tuple(NUMBERS),
            _t("a printed digit {}.", "the number {} in a font.", "a typed {}."),
            _printed_digits,
        ),
        TaskDef(
            "letters",
            tuple(f"letter {c}" for c in LETTERS),
            _t("a photo of the {}.", "the {} in a font.", "a printed {}."),
            _letters,
        ),
        TaskDef(
            "shapes",
            tuple(SHAPES),
            _t("a photo of a {}.", "a {} shape.", "a drawing of a {}."),
            _shapes,
        ),
        TaskDef(
            "textures",
            tuple(TEXTURES),
            _t("a texture of {}.", "a pattern of {}.", "a photo of {}."),
            _textures,
        ),
        TaskDef(
            "colours",
            tuple(COLOURS),
            _t("a photo of a {} object.", "something {}.", "the colour {}."),
            _colours,
        ),
        TaskDef(
            "counting",
            tuple(COUNTS),
            _t("a photo of {}.", "a picture with {}.", "{} on a picture."),
            _counting,
        ),
        TaskDef(
            "arrows",
            tuple(DIRECTIONS),
            _t("an arrow pointing {}.", "a photo of an arrow to the {}.", "a sign pointing {}."),
            _arrows,
        ),
        TaskDef(
            "symbols",
            (
                "question mark",
                "exclamation mark",
                "hash sign",
                "dollar sign",
                "percent sign",
                "ampersand",
                "at sign",
                "plus sign",
                "equals sign",
                "asterisk",
            ),
            _t("a photo of a {}.", "the symbol {}.", "a printed {}."),
            _symbols,
        ),
    ]
}
CONTROL_TASK = "symbols"


def draw(
    task: str, labels: np.ndarray, rng: np.random.Generator, pretrain: bool = False, **kwargs
) -> torch.Tensor:
    """uint8 images [n, 3, 28, 28] of ``task`` for the given labels (``kwargs``: drawer options)."""
    return TASKS[task].draw(labels, rng, pretrain, **kwargs)
