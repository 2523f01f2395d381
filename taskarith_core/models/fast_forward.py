"""A functional forward of open_clip's ViT image tower, reading the module's own tensors.

Evaluations run the same small tower over thousands of images for every edited model (the page
after each click, sweeps, the xi grid), so the module forward's overhead matters. This forward
does the same float32 arithmetic with plain torch ops and two savings the module cannot make:

- the patch embedding is one matrix product over the image reshaped into patches (a stride-p
  convolution without padding is exactly that);
- the last block only needs the class token: its keys and values come from every token, but its
  query, attention output, out-projection and MLP are computed for the class token alone.

On a CPU without autograd the linear layers (and the MLP's GELU, fused) go through oneDNN's
``_linear_pointwise``, which ran 10-30% faster than ``F.linear`` on these shapes; it is still
float32 throughout (no reduced-precision compute), so only the summation order differs.

Only what open_clip's ``VisionTransformer`` forward does for the features checked in
:func:`tower_spec` is implemented; any other tower (attentional pooling, patch dropout, average
pooling, custom blocks, extra token outputs, non-float32 weights, ResNets, timm) gets ``None``
there and callers use the module forward, never a different computation.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CPU_CHUNK", "TowerSpec", "chunked", "fast_features", "tower_forward", "tower_spec"]


@dataclass(frozen=True)
class TowerSpec:
    """What the functional forward needs beyond the tensors (read once from the module)."""

    width: int
    heads: int
    patch: tuple[int, int]
    grid: tuple[int, int]
    eps: float
    activation: str  # "none" / "tanh" (nn.GELU's approximate) or "quick" (QuickGELU)
    ln_pre: bool
    layer_scale: bool


def _activation(module: nn.Module) -> str | None:
    from open_clip.transformer import QuickGELU

    if type(module) is nn.GELU:
        return module.approximate
    return "quick" if type(module) is QuickGELU else None


def _norm_eps(modules: list[nn.Module], width: int) -> float | None:
    """The one eps of all LayerNorms, or None when one is not a plain affine LayerNorm."""
    from open_clip.transformer import LayerNorm, LayerNormFp32

    kinds = (nn.LayerNorm, LayerNorm, LayerNormFp32)
    if any(type(m) not in kinds for m in modules):
        return None
    if any(m.normalized_shape != (width,) or m.weight is None or m.bias is None for m in modules):
        return None
    eps = {float(m.eps) for m in modules}
    return eps.pop() if len(eps) == 1 else None


def _block_ok(block: nn.Module, width: int, act: str | None) -> bool:
    """A default open_clip block: fused in-projection with biases, no extra K/V norm, eval."""
    from open_clip.transformer import LayerScale, ResidualAttentionBlock

    attn = block.attn
    return (
        type(block) is ResidualAttentionBlock
        and not hasattr(block, "ln_1_kv")
        and type(attn) is nn.MultiheadAttention
        and attn.batch_first
        and attn._qkv_same_embed_dim
        and attn.in_proj_bias is not None
        and attn.out_proj.bias is not None
        and attn.bias_k is None
        and not attn.add_zero_attn
        and (attn.dropout == 0.0 or not block.training)
        and all(type(ls) in (nn.Identity, LayerScale) for ls in (block.ls_1, block.ls_2))
        and list(block.mlp._modules) == ["c_fc", "gelu", "c_proj"]
        and _activation(block.mlp.gelu) == act
        and block.mlp.c_fc.bias is not None
        and block.mlp.c_proj.bias is not None
    )


def _layer_scale(blocks: list[nn.Module]) -> bool | None:
    """True when every block scales both branches, False when none does, None when mixed."""
    from open_clip.transformer import LayerScale

    kinds = {type(ls) is LayerScale for b in blocks for ls in (b.ls_1, b.ls_2)}
    return kinds.pop() if len(kinds) == 1 else None


def _plain_vit(visual: nn.Module) -> bool:
    """open_clip ViT features this forward does not implement are refused here."""
    from open_clip.transformer import VisionTransformer

    if type(visual) is not VisionTransformer:
        return False
    conv = visual.conv1
    return (
        getattr(visual, "attn_pool", None) is None
        and type(visual.patch_dropout) is nn.Identity
        and visual.pool_type == "tok"
        and not visual.output_tokens
        and visual.proj is not None
        and visual.transformer.batch_first
        and conv.bias is None
        and conv.stride == conv.kernel_size
        and conv.padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and type(visual.ln_pre) in (nn.Identity, *_norm_types())
        and all(p.dtype == torch.float32 for p in visual.parameters())
    )


def _norm_types() -> tuple[type, ...]:
    from open_clip.transformer import LayerNorm, LayerNormFp32

    return (nn.LayerNorm, LayerNorm, LayerNormFp32)


def tower_spec(visual: nn.Module) -> TowerSpec | None:
    """The spec of an open_clip ViT this forward reproduces exactly, or None (use the module)."""
    try:
        if not _plain_vit(visual):
            return None
    except (ImportError, AttributeError):
        return None
    blocks = list(visual.transformer.resblocks)
    width = visual.conv1.out_channels
    act = _activation(blocks[0].mlp.gelu) if blocks else None
    norms = [visual.ln_post, *(n for b in blocks for n in (b.ln_1, b.ln_2))]
    has_pre = type(visual.ln_pre) is not nn.Identity
    eps = _norm_eps([*norms, visual.ln_pre] if has_pre else norms, width)
    scale = _layer_scale(blocks)
    if not blocks or act is None or eps is None or scale is None:
        return None
    if not all(_block_ok(b, width, act) for b in blocks):
        return None
    return TowerSpec(
        width=width,
        heads=blocks[0].attn.num_heads,
        patch=tuple(visual.conv1.kernel_size),
        grid=tuple(visual.grid_size),
        eps=eps,
        activation=act,
        ln_pre=has_pre,
        layer_scale=scale,
    )


def _agrees(out: torch.Tensor, ref: torch.Tensor) -> bool:
    """Same float32 values up to summation order: every entry within a few ulps of the output's
    scale. (``allclose``'s default atol of 1e-8 fails on entries near zero whose reference is a
    sum of O(1) products; that is reassociation, not a different computation.)"""
    scale = ref.abs().max().clamp(min=1.0)
    return out.shape == ref.shape and bool(((out - ref).abs() <= 1e-5 * scale).all())


@functools.cache
def _onednn_linear() -> Callable | None:
    """oneDNN's fused linear (+ GELU) for CPU float32, if this torch build has it and it agrees
    with ATen on a probe; it ran 10-30% faster than ``F.linear`` (+ ``F.gelu``) on the zoo's
    shapes, with the same float32 arithmetic."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return None
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=gen) for s in ((5, 3, 64), (48, 64), (48,)))
    try:
        same = all(
            _agrees(op(x, w, b, "gelu", [], kind), F.gelu(F.linear(x, w, b), approximate=kind))
            for kind in ("none", "tanh")
        )
        same = same and _agrees(op(x, w, None, "none", [], ""), F.linear(x, w))
        same = same and _agrees(op(x, w, b, "none", [], ""), F.linear(x, w, b))
    except (RuntimeError, TypeError):
        return None
    return op if same else None


def _linear(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, act: str = ""
) -> torch.Tensor:
    """``act(x @ w.T + b)`` with ``act`` "" (none) or a GELU kind; oneDNN on a CPU without
    autograd (its op has no backward), ATen otherwise."""
    op = _onednn_linear() if torch.backends.mkldnn.enabled else None
    if op is not None and x.device.type == "cpu" and not torch.is_grad_enabled():
        if not act:
            return op(x, w, b, "none", [], "")
        if act in ("none", "tanh"):  # nn.GELU's approximate: erf or tanh
            return op(x, w, b, "gelu", [], act)
    out = F.linear(x, w, b)
    return _act(out, act) if act else out


def _patches(images: torch.Tensor, spec: TowerSpec, weight: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> patch embeddings [N, grid tokens, width] (the stride-p convolution)."""
    (ph, pw), (gh, gw) = spec.patch, spec.grid
    n, c = images.shape[:2]
    if images.shape[2] // ph != gh or images.shape[3] // pw != gw:
        raise ValueError(
            f"images of {tuple(images.shape[2:])} px do not fit the tower's {gh}x{gw} grid of "
            f"{ph}x{pw} patches"
        )
    x = images[:, :, : gh * ph, : gw * pw].reshape(n, c, gh, ph, gw, pw)
    x = x.permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * ph * pw)
    return _linear(x, weight.reshape(weight.shape[0], -1), None)


def _act(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "quick":
        return x * torch.sigmoid(1.702 * x)
    return F.gelu(x, approximate=kind)


def _attention(h: torch.Tensor, attn: nn.MultiheadAttention, heads: int, cls_only: bool):
    """Multi-head self-attention of normalised tokens ``h``; class-token queries only if asked."""
    n, length, width = h.shape
    w, b = attn.in_proj_weight, attn.in_proj_bias
    if cls_only:
        q = _linear(h[:, :1], w[:width], b[:width])
        k, v = _linear(h, w[width:], b[width:]).chunk(2, dim=-1)
    else:
        q, k, v = _linear(h, w, b).chunk(3, dim=-1)
    split = (n, -1, heads, width // heads)
    q, k, v = (t.reshape(split).transpose(1, 2) for t in (q, k, v))
    out = _scaled_dot_product(q, k, v)
    out = out.transpose(1, 2).reshape(n, q.shape[2], width)
    return _linear(out, attn.out_proj.weight, attn.out_proj.bias)


def _scaled_dot_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over [N, heads, tokens, d]. On a CPU with several threads, as
    batched matmuls: torch's fused CPU kernel got slower with 2 threads than with 1 on the zoo's
    shapes (17 tokens: 12.6 ms against 7.5 ms; the matmuls 4.8 ms), while it is the fastest with
    one thread and on GPUs."""
    if q.device.type != "cpu" or torch.get_num_threads() < 2:
        return F.scaled_dot_product_attention(q, k, v)
    n, heads, length, dim = q.shape
    flat = [t.reshape(n * heads, -1, dim) for t in (q, k, v)]
    scores = torch.bmm(flat[0], flat[1].transpose(1, 2)).mul_(dim**-0.5)
    return torch.bmm(scores.softmax(-1), flat[2]).reshape(n, heads, length, dim)


def _block(x: torch.Tensor, block: nn.Module, spec: TowerSpec, cls_only: bool) -> torch.Tensor:
    norm = (spec.width,)
    h = F.layer_norm(x, norm, block.ln_1.weight, block.ln_1.bias, spec.eps)
    a = _attention(h, block.attn, spec.heads, cls_only)
    if spec.layer_scale:
        a = a * block.ls_1.gamma
    x = (x[:, :1] if cls_only else x) + a
    h = F.layer_norm(x, norm, block.ln_2.weight, block.ln_2.bias, spec.eps)
    mlp = block.mlp
    h = _linear(h, mlp.c_fc.weight, mlp.c_fc.bias, spec.activation)
    h = _linear(h, mlp.c_proj.weight, mlp.c_proj.bias)
    return x + (h * block.ls_2.gamma if spec.layer_scale else h)


def fast_features(visual: nn.Module, spec: TowerSpec, images: torch.Tensor) -> torch.Tensor:
    """Image features [N, output_dim], the same as ``visual(images)`` up to float reassociation."""
    x = _patches(images, spec, visual.conv1.weight)
    cls = visual.class_embedding.reshape(1, 1, -1).expand(len(x), 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding
    if spec.ln_pre:
        x = F.layer_norm(x, (spec.width,), visual.ln_pre.weight, visual.ln_pre.bias, spec.eps)
    blocks = visual.transformer.resblocks
    for i, block in enumerate(blocks):
        x = _block(x, block, spec, cls_only=i == len(blocks) - 1)
    pooled = x[:, 0]  # ln_post is per token, so pooling first is the same as after
    ln = visual.ln_post
    pooled = F.layer_norm(pooled, (spec.width,), ln.weight, ln.bias, spec.eps)
    return pooled @ visual.proj


_SPECS: weakref.WeakKeyDictionary[nn.Module, TowerSpec | None] = weakref.WeakKeyDictionary()


def tower_forward(visual: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images -> features`` for ``visual``: the functional forward when :func:`tower_spec`
    accepts the tower (in eval mode), else the module itself. Reads the live parameters, so
    weights loaded or mixed into the module in place are used without rebuilding anything."""
    if getattr(visual, "linearized", False):  # its forward is the Taylor expansion, not f
        return visual
    if visual not in _SPECS:
        _SPECS[visual] = tower_spec(visual)
    spec = _SPECS[visual]
    if spec is None or visual.training or visual.conv1.weight.dtype != torch.float32:
        return visual
    return lambda images: fast_features(visual, spec, images)


#: Images per forward call on a CPU: 1000-2000 ran fastest for the zoo's tower (fewer calls than
#: 256, activations still in the shared cache unlike 4000+).
CPU_CHUNK = 1024


def chunked(
    forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, chunk: int | None
) -> torch.Tensor:
    """``forward(images)`` in slices of ``chunk`` rows (all at once when ``chunk`` is None)."""
    if chunk is None or len(images) <= chunk:
        return forward(images)
    return torch.cat([forward(images[i : i + chunk]) for i in range(0, len(images), chunk)])
