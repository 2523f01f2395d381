"""Build a zoo from nothing: data spec, vocabulary, config, pretraining, three paradigms per task.

The shipped zoo (``ZOO_SPEC``) and the tests' miniature zoo (``MINI_SPEC``) go through this same
function. Pretrained weights are rounded to float16-representable values *before* fine-tuning, so
checkpoints stored in float16 keep weights that a paradigm did not train bit-identical to theta_pre
(sparse task vectors stay exactly sparse).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..io import atomic_path, save_state_dict
from ..keys import VISUAL_PREFIX
from ..models.clip import create_clip, register_arch, zero_shot_head
from ..progress import Progress, no_progress
from .arch import ARCH_NAME, IMAGE_MEAN, IMAGE_STD, CompactTokenizer, build_vocabulary, model_config
from .data import PRETRAIN_TEMPLATES, DataSpec, load_split, tasks_json
from .finetune import FinetuneConfig, finetune, trainable_mask
from .pretrain import PretrainConfig, pretrain
from .talos import TalosConfig, calibrate_mask
from .tasks import TASKS

__all__ = ["MINI_SPEC", "PARADIGMS", "ZOO_SPEC", "ZooSpec", "build_zoo"]

PARADIGMS = ("full", "attention", "talos")
#: bump when the image generators change: a build never resumes from another version's model
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class ZooSpec:
    """Everything that determines a zoo; written to ``tasks.json`` beside the weights."""

    #: The control plays ImageNet, the data a foundation model knows best: 24000 extra control
    #: images in the pretraining mixture (and 1500 steps) make it well learned (zero-shot 96%), so
    #: it survives negation at a useful lambda. Its val / test splits have 3000 images each, since
    #: negation picks lambda by the control's accuracy. Measured on test (full fine-tuning), TA
    #: negation's target / zero-shot: 0.73 with no extra images (control zero-shot 66%), 0.585
    #: with 12000 (88%), 0.47 with 24000 and 1500 steps.
    data: DataSpec = field(
        default_factory=lambda: DataSpec(
            pretrain_control=24000, control_sizes={"val": 3000, "test": 3000}
        )
    )
    width: int = 64
    layers: int = 4
    text_width: int = 64
    embed_dim: int = 64
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(steps=1500))
    finetune: dict[str, FinetuneConfig] = field(
        default_factory=lambda: {
            "full": FinetuneConfig(steps=300, lr=1e-3, warmup=30),
            "attention": FinetuneConfig(steps=250, lr=2e-3, warmup=25),
            "talos": FinetuneConfig(steps=250, lr=2e-3, warmup=25),
        }
    )
    talos: TalosConfig = field(default_factory=TalosConfig)
    paradigms: tuple[str, ...] = PARADIGMS
    dtype: str = "float16"  #: storage dtype of all weight files


ZOO_SPEC = ZooSpec()
MINI_SPEC = ZooSpec(
    data=DataSpec(
        tasks=("printed_digits", "shapes"),
        sizes={"train": 256, "val": 64, "test": 96},
        pretrain_per_task=256,
    ),
    width=32,
    layers=2,
    text_width=32,
    embed_dim=32,
    pretrain=PretrainConfig(steps=30, batch_size=64, warmup=5),
    finetune={p: FinetuneConfig(steps=15, batch_size=64, lr=1e-3, warmup=3) for p in PARADIGMS},
    talos=TalosConfig(rounds=2, batches_per_round=1, batch_size=32),
)


def _all_texts(data: DataSpec) -> list[str]:
    texts = []
    for task in [*data.tasks, data.control]:
        templates = [*TASKS[task].templates, *PRETRAIN_TEMPLATES]
        texts += [tpl.format(c) for c in TASKS[task].classnames for tpl in templates]
    return texts


def _spec_json(spec: ZooSpec, vocabulary: list[int]) -> dict:
    info = tasks_json(spec.data)
    info.update(
        generator_version=GENERATOR_VERSION,
        arch=ARCH_NAME,
        vocabulary=vocabulary,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        paradigms=list(spec.paradigms),
        build={k: v for k, v in asdict(spec).items() if k != "data"},
    )
    return info


_PRETRAIN_FIELDS = ("width", "layers", "text_width", "embed_dim", "pretrain", "dtype")


def _can_resume(out: Path, info: dict) -> bool:
    """True when ``out`` holds a pretrained model made from the same data, vocabulary and recipe.

    An interrupted or re-tuned build then skips pretraining; fine-tuning always reruns."""
    old_path = out / "tasks.json"
    if not (out / "pretrained.safetensors").is_file() or not old_path.is_file():
        return False
    try:
        old = json.loads(old_path.read_text())
    except ValueError:
        return False
    keys = ("data_spec", "vocabulary", "arch", "generator_version")
    same = all(old.get(k) == info[k] for k in keys)
    return same and all(old["build"].get(f) == info["build"][f] for f in _PRETRAIN_FIELDS)


def _write_json(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1))


def _round_to_storage(model: torch.nn.Module, dtype: torch.dtype) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())


def _visual_state(visual: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {VISUAL_PREFIX + k: v.detach().to(dtype).cpu() for k, v in visual.state_dict().items()}


def build_zoo(
    out_dir: str | Path,
    spec: ZooSpec = ZOO_SPEC,
    progress: Progress = no_progress,
    device: str | torch.device = "cpu",
) -> Path:
    """Train and write a complete zoo into ``out_dir``; returns the folder.

    A pretrained model already in ``out_dir`` from the same recipe is reused (resumed build)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.pretrain.seed)
    dtype = getattr(torch, spec.dtype)
    vocabulary = build_vocabulary(_all_texts(spec.data))
    config = model_config(len(vocabulary), spec.width, spec.layers, spec.text_width, spec.embed_dim)
    register_arch(config, ARCH_NAME)
    tokenizer = CompactTokenizer(vocabulary)
    jobs = [(paradigm, task) for paradigm in spec.paradigms for task in spec.data.tasks]
    total = spec.pretrain.steps + len(jobs)
    started = time.time()
    info = json.loads(json.dumps(_spec_json(spec, vocabulary)))
    if _can_resume(out, info):
        model = create_clip(ARCH_NAME, out / "pretrained.safetensors", device)
    else:
        model = create_clip(ARCH_NAME, device=device)
        pretrain(
            model, spec.data, tokenizer, spec.pretrain, progress_part(progress, 0, total), device
        )
        _round_to_storage(model, dtype)
        state = {k: v.detach().to(dtype).cpu() for k, v in model.state_dict().items()}
        save_state_dict(state, out / "pretrained.safetensors", {"arch": ARCH_NAME})
    _write_json(config, out / "config.json")
    _write_json(info, out / "tasks.json")
    progress(spec.pretrain.steps, total, "pretrained")
    heads = text_heads(model, tokenizer, [*spec.data.tasks, spec.data.control], device)
    save_state_dict(heads, out / "heads.safetensors", {"arch": ARCH_NAME})
    pre_visual = {k: v.clone() for k, v in model.visual.state_dict().items()}
    for done, (paradigm, task) in enumerate(jobs, start=1):
        model.visual.load_state_dict(pre_visual)
        _finetune_one(model.visual, heads[task], task, paradigm, spec, out, dtype, device)
        progress(spec.pretrain.steps + done, total, f"{paradigm}/{task}")
    _write_json({"seconds": round(time.time() - started, 1)}, out / "build_time.json")
    return out


def progress_part(progress: Progress, offset: int, total: int) -> Progress:
    """A sub-task's progress shifted into the whole build's bar."""
    return lambda done, _total, message="": progress(min(offset + done, total), total, message)


def text_heads(
    model: torch.nn.Module, tokenizer: CompactTokenizer, tasks: list[str], device="cpu"
) -> dict[str, torch.Tensor]:
    """Frozen zero-shot head of every task from its evaluation templates (a cache of theta_pre)."""
    return {
        t: zero_shot_head(model, tokenizer, TASKS[t].classnames, TASKS[t].templates, device)
        .clone()  # out of inference mode, so that training can use it
        .cpu()
        for t in tasks
    }


def _finetune_one(visual, head, task, paradigm, spec, out, dtype, device) -> None:
    images, labels = load_split(task, "train", spec=spec.data)
    ft_config = replace(spec.finetune[paradigm], seed=spec.finetune[paradigm].seed)
    if paradigm == "talos":
        mask = calibrate_mask(visual, head.to(device), images, spec.talos)
    else:
        mask = trainable_mask(visual, paradigm)
    finetune(visual, head, images, labels, ft_config, mask, device=device)
    (out / paradigm).mkdir(exist_ok=True)
    meta = {"arch": ARCH_NAME, "task": task, "paradigm": paradigm}
    save_state_dict(_visual_state(visual, dtype), out / paradigm / f"{task}.safetensors", meta)
    if paradigm == "talos":
        save_state_dict(mask, out / paradigm / f"{task}.mask.safetensors", meta)
