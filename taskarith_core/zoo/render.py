"""Drawing primitives for the zoo's synthetic images: masks at 56x56, warped and shrunk to 28x28.

Every task draws a float mask (1 = ink) at twice the final resolution, warps it with a random affine
transform, average-pools it to 28x28 (cheap anti-aliasing) and colours it. Everything is batched
torch / numpy with explicit generators, so a split is reproduced bit-for-bit from its seed.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "HI",
    "SIZE",
    "colourise",
    "font_path",
    "glyph_mask",
    "grid",
    "outline",
    "polygon_mask",
    "warp",
]

SIZE = 28  #: final image side
HI = 2 * SIZE  #: side at which masks are drawn


def font_path(name: str) -> Path:
    """A font file bundled with matplotlib (no download, same on every machine)."""
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name


@lru_cache(maxsize=4096)
def _glyph(font: str, char: str) -> np.ndarray:
    face = ImageFont.truetype(str(font_path(font)), int(HI * 0.62))
    image = Image.new("L", (HI, HI))
    ImageDraw.Draw(image).text((HI // 2, HI // 2), char, fill=255, font=face, anchor="mm")
    return np.asarray(image, dtype=np.float32) / 255.0


def glyph_mask(fonts: list[str], chars: list[str]) -> torch.Tensor:
    """Masks [n, 1, HI, HI] of ``chars[i]`` rendered in ``fonts[i]``."""
    return torch.from_numpy(np.stack([_glyph(f, c) for f, c in zip(fonts, chars)]))[:, None]


def grid(n: int = 1, side: int = HI) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [-1, 1], shaped [1, side, side] (x to the right, y down)."""
    axis = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return x[None].expand(n, side, side), y[None].expand(n, side, side)


def polygon_mask(polys: list[np.ndarray]) -> torch.Tensor:
    """Masks [n, 1, HI, HI] of filled polygons given in [-1, 1] coordinates (one per image)."""
    out = np.zeros((len(polys), HI, HI), dtype=np.float32)
    for i, poly in enumerate(polys):
        image = Image.new("L", (HI, HI))
        points = [(float((px + 1) / 2 * HI), float((py + 1) / 2 * HI)) for px, py in poly]
        ImageDraw.Draw(image).polygon(points, fill=255)
        out[i] = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(out)[:, None]


def outline(mask: torch.Tensor, width: int = 3) -> torch.Tensor:
    """The border of a mask (mask minus its erosion): the 'outline' style of pretraining."""
    eroded = -F.max_pool2d(-mask, kernel_size=2 * width + 1, stride=1, padding=width)
    return (mask - eroded).clamp(0, 1)


def warp(
    mask: torch.Tensor,
    rng: np.random.Generator,
    rotate: float = 15.0,
    scale: tuple[float, float] = (0.8, 1.1),
    shift: float = 0.12,
    angles: np.ndarray | None = None,
) -> torch.Tensor:
    """Random rotation (degrees, plus fixed ``angles``), scale and shift; -> [n, 1, 28, 28]."""
    n = mask.shape[0]
    theta = rng.uniform(-rotate, rotate, n)
    if angles is not None:
        theta = theta + angles
    theta = np.deg2rad(theta)
    s = rng.uniform(scale[0], scale[1], n)
    t = rng.uniform(-shift, shift, (n, 2))
    cos, sin = np.cos(theta) / s, np.sin(theta) / s
    mat = np.stack([np.stack([cos, -sin, t[:, 0]], 1), np.stack([sin, cos, t[:, 1]], 1)], 1)
    grid_ = F.affine_grid(torch.from_numpy(mat.astype(np.float32)), [n, 1, HI, HI], False)
    warped = F.grid_sample(mask, grid_, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(warped, 2)


def _random_colours(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    base = rng.uniform(lo, hi, (n, 1))
    return np.clip(base + rng.uniform(-0.25, 0.25, (n, 3)), 0, 1)


def colourise(
    mask: torch.Tensor,
    rng: np.random.Generator,
    dark_background: bool | np.ndarray = True,
    fg: np.ndarray | None = None,
    noise: float = 0.04,
) -> torch.Tensor:
    """Blend random foreground / background colours through the mask; -> uint8 [n, 3, 28, 28].

    ``dark_background`` (one flag, or one per image) is the task style: light ink on dark;
    pretraining inverts it for part of the images (a style shift). ``fg`` fixes the foreground
    colours (the colour task's labels).
    """
    n = mask.shape[0]
    dark = np.broadcast_to(np.asarray(dark_background, dtype=bool), (n,))[:, None]
    bg = np.where(dark, _random_colours(rng, n, 0.0, 0.3), _random_colours(rng, n, 0.7, 1.0))
    if fg is None:
        fg = np.where(dark, _random_colours(rng, n, 0.7, 1.0), _random_colours(rng, n, 0.0, 0.3))
    fg_t = torch.from_numpy(fg.astype(np.float32))[:, :, None, None]
    bg_t = torch.from_numpy(bg.astype(np.float32))[:, :, None, None]
    image = bg_t + (fg_t - bg_t) * mask
    image = image + torch.from_numpy(rng.normal(0, noise, image.shape).astype(np.float32))
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def star_polygon(points: int, inner: float, outer: float = 0.8) -> np.ndarray:
    """A star (or, with inner == outer, a regular polygon) centred at the origin."""
    angles = np.arange(2 * points) * math.pi / points - math.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
