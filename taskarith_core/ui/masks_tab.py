"""Masks tab: per-layer selection rates (tasks x layers, by kind), mask IoU, per-tensor drill-down.

Letting go of p or the sparsity rebuilds the masks from cached importances (the Explorer's memo),
so the heatmap follows the slider at once; the drill-down draws each task's mask of one 2-D
tensor as an image.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from ..errors import InputError
from ..numbers import percent_text
from ..runconfig import RunConfig
from .common import config_from_source, explorer, user_errors, write_figures
from .merge_tab import IMPORTANCE_LABELS

__all__ = [
    "KIND_CHOICES",
    "build_masks_tab",
    "mask_config",
    "mask_images",
    "mask_summary",
    "iou_view",
    "mask_views",
    "masks_html",
    "update_iou",
    "update_masks",
]

MASK_KINDS = [
    ("STA crossmasking (quantile p)", "sta"),
    ("TaLoS-style bottom-k (sparsity)", "masked_arithmetic"),
]
KIND_CHOICES = ["all", "attention", "mlp", "layernorm", "embedding", "other"]
_MAX_SIDE = 384  # drill-down images are pooled down to at most this many pixels per side


def mask_config(
    source: dict | None,
    tasks: list[str],
    mask_kind: str,
    importance: str,
    p: float,
    sparsity: float,
    samples: float,
    seed: float,
) -> RunConfig:
    """A run config for the masks of the chosen tasks (what the Merge tab would merge with)."""
    if not tasks or len(tasks) < 2:
        raise InputError("masks compare tasks: tick at least two tasks")
    return config_from_source(
        source,
        action="merge",
        method=mask_kind,
        tasks=list(tasks),
        importance=importance,
        params={"p": float(p)} if mask_kind == "sta" else {"sparsity": float(sparsity)},
        samples=int(samples),
        seed=int(seed),
    )


def mask_views(cfg: RunConfig, kind: str) -> tuple[Any, str, list[str]]:
    """(selection-rate heatmap, summary line, tensor names) at the config's p or sparsity."""
    from ..analyses.figures import rates_figure
    from ..analyses.geometry import pool_rates, rates_table

    service = explorer(cfg)
    masks = service.masks(cfg)

    def rates() -> Any:
        imps = {t: service.importance(t, cfg.importance, cfg.samples, cfg.seed) for t in masks}
        return rates_table(masks, "tensor", imps)

    per_tensor = service.memo(("rates", service.mask_key(cfg)), rates)
    pooled = pool_rates(per_tensor)
    shown = pooled if kind == "all" else pooled[pooled["kind"] == kind]
    if shown.empty:
        raise InputError(f"no tensor of kind {kind!r} in this model; pick another kind")
    tensors = [key for key, value in next(iter(masks.values())).items() if value.dim() >= 1]
    text = mask_summary(masks) + no_ranking_summary(per_tensor)
    return rates_figure(shown, _title(cfg)), text, tensors


def iou_view(cfg: RunConfig) -> Any:
    """Mask IoU between every pair of tasks (drawn after the heatmap: it costs more)."""
    from ..analyses.figures import iou_figure
    from ..analyses.geometry import mask_iou

    service = explorer(cfg)
    masks = service.masks(cfg)
    iou = service.memo(("iou", service.mask_key(cfg)), lambda: mask_iou(masks))
    return iou_figure(iou, _title(cfg))


def _title(cfg: RunConfig) -> str:
    if cfg.method == "sta":
        return f"STA masks, p={cfg.param('p'):.2f}, importance {cfg.importance}"
    sparsity = cfg.param("sparsity")
    return f"TaLoS-style bottom-k masks, sparsity={sparsity:.2f}, importance {cfg.importance}"


def mask_summary(masks: dict[str, dict[str, Any]]) -> str:
    """Fraction of entries each task keeps (the actual masks, ties included)."""
    parts = []
    for task, mask in masks.items():
        kept = sum(int(v.sum()) for v in mask.values())
        total = sum(v.numel() for v in mask.values())
        parts.append(f"{task} {percent_text(kept / max(total, 1))}")
    return "Kept per task: " + ", ".join(parts)


def no_ranking_summary(per_tensor: Any) -> str:
    """Where importance ranks nothing (at most 2^-20 of its tensor's largest value, or constant):
    those entries count as ties that no task wins, so the masks there say nothing."""
    if "no_ranking" not in per_tensor or not per_tensor["no_ranking"].any():
        return ""
    share = per_tensor.groupby("tensor", sort=False)[["no_ranking", "numel"]].sum()
    share = (share["no_ranking"] / share["numel"]).sort_values(ascending=False)
    named = ", ".join(f"`{t}` {v:.0%}" for t, v in share[share > 0].head(3).items())
    return (
        f"\n\nNo ranking (importance below the noise floor, treated as ties): {named}"
        + (f" and {int((share > 0).sum()) - 3} more tensors" if (share > 0).sum() > 3 else "")
        + "."
    )


def mask_images(cfg: RunConfig, tensor: str) -> list[tuple[np.ndarray, str]]:
    """Each task's mask of ``tensor`` as a black/white image (white = kept), with its rate."""
    if not tensor:
        raise InputError("pick a tensor to draw its masks")
    masks = explorer(cfg).masks(cfg)
    first = next(iter(masks.values()))
    if tensor not in first:
        raise InputError(f"tensor {tensor!r} is not in the masks; pick one from the list")
    out = []
    for task, mask in masks.items():
        values = mask[tensor].float()
        out.append((_to_image(values), f"{task} {percent_text(values.mean())}"))
    return out


def _to_image(values: Any) -> np.ndarray:
    """2-D (or reshaped) mask -> uint8 image, mean-pooled so big tensors fit on the page."""
    import torch
    import torch.nn.functional as F

    grid = values.reshape(values.shape[0], -1) if values.dim() >= 2 else values.reshape(1, -1)
    if grid.shape[0] == 1:
        grid = grid.expand(max(1, min(16, grid.shape[1] // 16)), -1)
    factor = max(1, int(np.ceil(max(grid.shape) / _MAX_SIDE)))
    if factor > 1:
        grid = F.avg_pool2d(grid[None, None], factor, ceil_mode=True)[0, 0]
    scale = max(1, _MAX_SIDE // max(grid.shape) // 2)
    if scale > 1:
        grid = torch.repeat_interleave(torch.repeat_interleave(grid, scale, 0), scale, 1)
    return (grid.clamp(0, 1) * 255).to(torch.uint8).numpy()


@user_errors
def update_masks(source: dict | None, kind: str, *values: Any) -> tuple:
    """Callback of every Masks control: heatmap, summary line, tensor list (then the IoU)."""
    rates_fig, text, names = mask_views(mask_config(source, *values), kind)
    return rates_fig, text, gr.update(choices=names)


@user_errors
def update_iou(source: dict | None, kind: str, *values: Any) -> Any:
    return iou_view(mask_config(source, *values))


@user_errors
def masks_html(source: dict | None, kind: str, *values: Any) -> list[str]:
    """Both figures as HTML beside one shared plotly.min.js, written only when asked."""
    cfg = mask_config(source, *values)
    return write_figures(
        {"mask_rates.html": mask_views(cfg, kind)[0], "mask_iou.html": iou_view(cfg)}
    )


def build_masks_tab(source_state: gr.State, task_names: list[str]) -> dict[str, Any]:
    """Lay out the Masks tab; heatmaps follow p / k when a slider is let go."""
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            tasks = gr.CheckboxGroup(
                task_names, value=task_names, label="Tasks", elem_id="masks-tasks"
            )
            mask_kind = gr.Radio(MASK_KINDS, value="sta", label="Masks")
            importance = gr.Dropdown(IMPORTANCE_LABELS, value="lp", label="Importance metric")
            p = gr.Slider(0, 1, value=0.8, step=0.01, label="Quantile p", elem_id="masks-p")
            k = gr.Slider(0, 0.99, value=0.9, step=0.01, label="Sparsity (fraction frozen)")
            samples = gr.Slider(1, 256, value=32, step=1, label="Ns (samples for lp / fisher)")
            seed = gr.Number(0, precision=0, label="Seed")
            kind = gr.Radio(KIND_CHOICES, value="all", label="Tensor kind in the heatmap")
            summary = gr.Markdown(elem_id="masks-summary")
        with gr.Column(scale=2):
            heatmap = gr.Plot(label="Selection rate per layer", elem_id="masks-heatmap")
            iou = gr.Plot(label="Mask IoU across tasks", elem_id="masks-iou")
            with gr.Row():
                refresh = gr.Button("Redraw", size="sm")
                html = gr.Button("Figures as HTML", size="sm")
            files = gr.File(label="Figures (HTML)", file_count="multiple", height=120)
            tensor = gr.Dropdown(
                [], label="Drill down: tensor", allow_custom_value=True, elem_id="masks-tensor"
            )
            gallery = gr.Gallery(
                label="Mask of each task (white = kept; caption: share kept)",
                columns=4,
                height="fit-content",  # as tall as its rows: no empty band, no cut row
                object_fit="contain",
                allow_preview=False,
                elem_id="masks-gallery",
            )
    controls = [tasks, mask_kind, importance, p, k, samples, seed]

    inputs = [source_state, kind, *controls]
    outputs = [heatmap, summary, tensor]
    for control in (*controls, kind):
        # a slider redraws once, where it is let go (a drag fires .change at every step and
        # queued seconds of redraws on a busy machine); the other controls on each change
        event = control.release if isinstance(control, gr.Slider) else control.change
        event(
            update_masks,
            inputs,
            outputs,
            trigger_mode="always_last",
            show_progress="minimal",
            api_visibility="private",
        ).then(update_iou, inputs, iou, api_visibility="private", show_progress="minimal")

    @user_errors
    def on_tensor(source, name, *values):
        return mask_images(mask_config(source, *values), name)

    tensor.change(on_tensor, [source_state, tensor, *controls], gallery, api_name="mask_images")
    refresh.click(update_masks, inputs, outputs, api_name="masks").then(
        update_iou, inputs, iou, api_name="masks_iou"
    )
    html.click(masks_html, inputs, files, api_name="masks_html")
    return {"tasks": tasks, "controls": controls, "inputs": inputs, "outputs": outputs, "iou": iou}
