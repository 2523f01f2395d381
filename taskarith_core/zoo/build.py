"""Build a zoo from nothing: data spec, vocabulary, config, pretraining, six paradigms per task.

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
from ..models.linearized import LinearizedTower, is_linearized
from ..progress import Progress, no_progress
from .arch import ARCH_NAME, IMAGE_MEAN, IMAGE_STD, CompactTokenizer, build_vocabulary, model_config
from .data import PRETRAIN_TEMPLATES, DataSpec, load_split, tasks_json
from .finetune import FinetuneConfig, finetune, trainable_mask
from .paradigms import (
    LoraConfig,
    LotaConfig,
    finetune_l_lora,
    finetune_linearized,
    finetune_lota,
    val_accuracy,
)
from .pretrain import PretrainConfig, pretrain
from .talos import TalosConfig, calibrate_mask
from .tasks import TASKS

__all__ = ["MINI_SPEC", "PARADIGMS", "ZOO_SPEC", "ZooSpec", "build_zoo"]

PARADIGMS = ("full", "attention", "talos", "linearized", "l-lora", "lota")
#: paradigms whose fine-tuned files come with a gradient mask (``<task>.mask.safetensors``)
MASKED = ("talos", "lota")
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
            "linearized": FinetuneConfig(steps=250, lr=1e-3, warmup=25),
            "l-lora": FinetuneConfig(steps=250, lr=1e-2, warmup=25),
            "lota": FinetuneConfig(steps=250, lr=2e-3, warmup=25),
        }
    )
    talos: TalosConfig = field(default_factory=TalosConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    #: LoTA's 50 calibration steps + 250 sparse steps: the 300 steps of full fine-tuning
    lota: LotaConfig = field(default_factory=LotaConfig)
    #: learning rates tried per paradigm on the validation split of ``select_task`` (the best
    #: replaces the config's lr for every task; the choice is written to tasks.json)
    lr_grid: dict[str, tuple[float, ...]] = field(
        default_factory=lambda: {
            "linearized": (1e-3, 3e-3),
            "l-lora": (3e-3, 1e-2),
            "lota": (1e-3, 2e-3),
        }
    )
    select_task: str = "digits"
    paradigms: tuple[str, ...] = ("full", "attention", "talos")
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
    lota=LotaConfig(calibration_steps=5),
    lr_grid={"linearized": (1e-3, 3e-3), "l-lora": (1e-2,), "lota": (1e-3,)},
    select_task="shapes",
    paradigms=PARADIGMS,
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
        build=_build_json(spec),
    )
    return info


#: spec fields that only matter (and are only written) when their paradigm is in the zoo
_PARADIGM_FIELDS = {"lora": "l-lora", "lota": "lota", "lr_grid": None, "select_task": None}


def _build_json(spec: ZooSpec) -> dict:
    """The recipe as data; settings of paradigms the zoo lacks are left out, so a zoo of fewer
    paradigms writes the same file as before those paradigms existed."""
    out = {k: v for k, v in asdict(spec).items() if k != "data"}
    out["finetune"] = {p: c for p, c in out["finetune"].items() if p in spec.paradigms}
    grid = {p: list(v) for p, v in spec.lr_grid.items() if p in spec.paradigms}
    for key, paradigm in _PARADIGM_FIELDS.items():
        if (paradigm is None and not grid) or (paradigm and paradigm not in spec.paradigms):
            out.pop(key)
    if grid:
        out["lr_grid"] = grid
    return out


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
    train_only: tuple[str, ...] | None = None,
) -> Path:
    """Train and write a complete zoo into ``out_dir``; returns the folder.

    A pretrained model already in ``out_dir`` from the same recipe is reused (resumed build).
    ``train_only`` fine-tunes only those paradigms (the others' files stay as they are)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.pretrain.seed)
    dtype = getattr(torch, spec.dtype)
    vocabulary = build_vocabulary(_all_texts(spec.data))
    config = model_config(len(vocabulary), spec.width, spec.layers, spec.text_width, spec.embed_dim)
    register_arch(config, ARCH_NAME)
    tokenizer = CompactTokenizer(vocabulary)
    paradigms = [p for p in spec.paradigms if train_only is None or p in train_only]
    runs = sum(len(spec.data.tasks) + max(0, len(spec.lr_grid.get(p, ())) - 1) for p in paradigms)
    total = spec.pretrain.steps + runs
    started = time.time()
    info = json.loads(json.dumps(_spec_json(spec, vocabulary)))
    old_selection = _old_selection(out) if train_only is not None else {}
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
    done = [spec.pretrain.steps]

    def tick(message: str) -> None:
        done[0] += 1
        progress(done[0], total, message)

    selection = {}
    for paradigm in paradigms:
        job = _Job(model.visual, pre_visual, heads, paradigm, spec, dtype, device)
        record = _train_paradigm(job, out, tick)
        if record is not None:
            selection[paradigm] = record
    selection = {p: selection.get(p, old_selection.get(p)) for p in spec.paradigms}
    if any(selection.values()):
        info["selection"] = {p: r for p, r in selection.items() if r}
        _write_json(info, out / "tasks.json")
    _write_build_time(out, time.time() - started, train_only)
    return out


def _old_selection(out: Path) -> dict:
    try:
        return json.loads((out / "tasks.json").read_text()).get("selection", {})
    except (OSError, ValueError):
        return {}


def _write_build_time(out: Path, seconds: float, train_only) -> None:
    """A whole build writes its time; a partial one adds its stage to the recorded times."""
    if train_only is None:
        _write_json({"seconds": round(seconds, 1)}, out / "build_time.json")
        return
    try:
        record = json.loads((out / "build_time.json").read_text())
    except (OSError, ValueError):
        record = {}
    record.setdefault("stages", {})[",".join(train_only)] = round(seconds, 1)
    _write_json(record, out / "build_time.json")


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


@dataclass
class _Job:
    """What fine-tuning one paradigm needs: the tower (reset to theta_pre per run), heads, spec."""

    visual: torch.nn.Module
    pre_visual: dict[str, torch.Tensor]
    heads: dict[str, torch.Tensor]
    paradigm: str
    spec: ZooSpec
    dtype: torch.dtype
    device: str | torch.device

    def run(self, task: str, config: FinetuneConfig) -> tuple[dict, dict | None]:
        """Fine-tune ``task`` from theta_pre; (stored state, mask or None)."""
        self.visual.load_state_dict(self.pre_visual)
        mask = _finetune_one(self.visual, self.heads[task], task, self.paradigm, config,
                             self.spec, self.device)  # fmt: skip
        return _visual_state(self.visual, self.dtype), mask


def _select_lr(job: _Job, tick) -> tuple[dict, dict]:
    """Each learning rate of the grid on ``select_task``; the best by validation accuracy (the
    linearised paradigms measured as the linearised model). Returns the record and the winner's
    trained files, so that the selection task is not trained twice."""
    spec, task = job.spec, job.spec.select_task
    images, labels = load_split(task, "val", spec=spec.data)
    scores, best = {}, None
    for lr in spec.lr_grid[job.paradigm]:
        files = job.run(task, replace(spec.finetune[job.paradigm], lr=lr))
        visual = job.visual
        if is_linearized(job.paradigm):
            visual = LinearizedTower(job.visual, job.pre_visual)
        acc = val_accuracy(visual, job.heads[task], images, labels, job.device)
        scores[repr(lr)] = round(acc, 4)
        if best is None or acc > best[0]:
            best = (acc, lr, files)
        tick(f"{job.paradigm}: lr {lr:g} on {task} val {acc:.3f}")
    record = {"task": task, "split": "val", "accuracy": scores, "lr": best[1]}
    return record, {task: best[2]}


def _train_paradigm(job: _Job, out: Path, tick) -> dict | None:
    """Every task of one paradigm (lr chosen on validation first when the spec has a grid)."""
    config, record, ready = job.spec.finetune[job.paradigm], None, {}
    if job.paradigm in job.spec.lr_grid:
        record, ready = _select_lr(job, tick)
        config = replace(config, lr=record["lr"])
    (out / job.paradigm).mkdir(exist_ok=True)
    for task in job.spec.data.tasks:
        state, mask = ready[task] if task in ready else job.run(task, config)
        meta = {"arch": ARCH_NAME, "task": task, "paradigm": job.paradigm}
        save_state_dict(state, out / job.paradigm / f"{task}.safetensors", meta)
        if mask is not None and job.paradigm in MASKED:
            save_state_dict(mask, out / job.paradigm / f"{task}.mask.safetensors", meta)
        if task not in ready:
            tick(f"{job.paradigm}/{task}")
    return record


def _finetune_one(visual, head, task, paradigm, config, spec, device):
    """Train ``visual`` in place on ``task`` in ``paradigm``; the gradient mask, if any."""
    images, labels = load_split(task, "train", spec=spec.data)
    if paradigm == "linearized":
        finetune_linearized(visual, head, images, labels, config, device)
        return None
    if paradigm == "l-lora":
        finetune_l_lora(visual, head, images, labels, config, spec.lora, device)
        return None
    if paradigm == "lota":
        return finetune_lota(visual, head, images, labels, config, spec.lota, device)
    if paradigm == "talos":
        mask = calibrate_mask(visual, head.to(device), images, spec.talos)
    else:
        mask = trainable_mask(visual, paradigm)
    finetune(visual, head, images, labels, config, mask, device=device)
    return mask
