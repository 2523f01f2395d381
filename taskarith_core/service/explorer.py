"""The explorer's service: one :class:`Explorer` per model source, shared by every page user and
by ``run --config``.

Results are keyed by exactly what determines them (``RunConfig.key``), so per-user state can stay
small (``gr.State`` holds configs and tables) while importances, masks, merged models and
evaluations are computed once: moving p recomputes the masks, never the importances.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pandas as pd

from ..device import pick_device
from ..errors import InputError
from ..fusion import merge, negate
from ..importance import compute_importance
from ..masks import Mask, lower_rank, sta_fusion_masks, sta_negation_mask
from ..models.source import ModelSource
from ..progress import Progress, no_progress
from ..runconfig import RunConfig, method_spec
from ..taskvec import StateDict
from .cache import Memo

__all__ = ["MODEL_METRICS", "Explorer"]

#: importance metrics that run the model on Ns samples (the others ignore Ns)
MODEL_METRICS = ("lp", "fisher", "lp_amp")


class Explorer:
    """Cached access to one source's weights, importances, masks, merges and accuracies."""

    def __init__(self, source: ModelSource, device: str = "cpu"):
        self.source = source
        self.device = str(pick_device(device))
        self.counts: Counter = Counter()  #: computations per kind (tests check what was reused)
        self._weights: Memo = Memo("weights", counter=self.counts)
        self._importance: Memo = Memo("importance", counter=self.counts)
        self._masks: Memo = Memo("masks", maxsize=32, counter=self.counts)
        self._states: Memo = Memo("state", maxsize=8, counter=self.counts)
        self._evals: Memo = Memo("evaluation", maxsize=256, counter=self.counts)
        self._reference: Memo = Memo("reference", counter=self.counts)
        self._misc: Memo = Memo("analysis", maxsize=64, counter=self.counts)

    # --- inputs ---------------------------------------------------------------------------
    @property
    def tasks(self) -> list[str]:
        return list(self.source.tasks)

    def resolve_tasks(self, tasks: Sequence[str], minimum: int = 2) -> list[str]:
        """Chosen tasks in the source's order; empty = all. Errors say what to tick."""
        chosen = list(tasks) or self.tasks
        unknown = [t for t in chosen if t not in self.tasks]
        if unknown:
            raise InputError(
                f"task {unknown[0]!r} is not in {self.source.name}; choose from "
                f"{', '.join(self.tasks)}"
            )
        if len(chosen) < minimum:
            raise InputError(
                f"a merge needs at least {minimum} tasks but {len(chosen)} is ticked; "
                "tick two or more tasks"
            )
        return [t for t in self.tasks if t in chosen]

    def pretrained(self) -> StateDict:
        return self._weights.get(("pre",), self.source.load_pretrained)

    def finetuned(self, task: str) -> StateDict:
        return self._weights.get(("ft", task), lambda: self.source.load_finetuned(task))

    def importance(self, task: str, metric: str, samples: int, seed: int) -> StateDict:
        """I_t of one task. Model-based metrics also go through the model engine's disk cache
        (a restarted page or the CLI reuses them); model-free ones ignore Ns."""
        model_based = metric in MODEL_METRICS
        key = (task, metric, samples if model_based else 0, seed)

        def compute() -> StateDict:
            if model_based:
                from ..models.importance import cached_importance

                return dict(
                    cached_importance(self.source, task, metric, samples, seed, self.device)
                )
            return compute_importance(
                metric, self.pretrained(), self.finetuned(task), task=task, seed=seed
            )

        return self._importance.get(key, compute)

    # --- masks and edited models -----------------------------------------------------------
    def mask_key(self, cfg: RunConfig, tasks: Sequence[str] | None = None) -> tuple:
        """What the masks of ``cfg`` depend on. STA masks depend on p only through the lower rank
        floor((N-1) p) (masks.lower_rank), so a slider move within one step reuses them."""
        chosen = self.resolve_tasks(tasks if tasks is not None else cfg.tasks)
        samples = cfg.samples if cfg.importance in MODEL_METRICS else 0
        if cfg.method == "sta":
            level: tuple = ("rank", lower_rank(len(chosen), cfg.param("p")))
        else:
            level = ("sparsity", cfg.param("sparsity"))
        return (tuple(chosen), cfg.importance, samples, cfg.seed, level)

    def masks(self, cfg: RunConfig, tasks: Sequence[str] | None = None) -> dict[str, Mask]:
        """Per-task masks of an STA run (quantile p) or of a method that reads masks (bottom-k
        masks at ``sparsity``): what the Masks tab draws and what the merge applies."""
        chosen = self.resolve_tasks(tasks if tasks is not None else cfg.tasks)

        def compute() -> dict[str, Mask]:
            imps = [self.importance(t, cfg.importance, cfg.samples, cfg.seed) for t in chosen]
            if cfg.method == "sta":
                return dict(zip(chosen, sta_fusion_masks(imps, cfg.param("p"))))
            from ..analyses.methods import bottom_k_masks

            return dict(zip(chosen, bottom_k_masks(imps, cfg.param("sparsity"))))

        return self._masks.get(self.mask_key(cfg, chosen), compute)

    def masked_task_vectors(self, cfg: RunConfig, tasks: Sequence[str]) -> list[StateDict]:
        """Each task's tau_t restricted to its mask of ``cfg`` (STA at p, or bottom-k): the
        edited task vectors the disentanglement error compares."""
        from ..taskvec import task_vector

        masks = self.masks(cfg, tasks)
        pre = self.pretrained()
        vectors = []
        for task in tasks:  # in the caller's order (xi's task 1, task 2)
            tau = task_vector(pre, self.finetuned(task))
            vectors.append({k: v * masks[task][k].to(v.dtype) for k, v in tau.items()})
        return vectors

    def result_key(self, cfg: RunConfig) -> tuple:
        """Cache key of a merged model / its accuracies (an STA merge: p through its rank)."""
        if cfg.action == "merge" and cfg.method == "sta":
            n_tasks = len(self.resolve_tasks(cfg.tasks))
            return cfg.key(p_rank=lower_rank(n_tasks, cfg.param("p")))
        return cfg.key()

    def merged_state(self, cfg: RunConfig, progress: Progress = no_progress) -> StateDict:
        """The merged image tower of a merge config (or the edited one of a negation config)."""
        return self._states.get(self.result_key(cfg), lambda: self._edit(cfg, progress))

    def _edit(self, cfg: RunConfig, progress: Progress) -> StateDict:
        """The method's spec says which side input to make; its parameters come from the config
        by name, so a registered method needs nothing here."""
        if cfg.action == "negate":
            return self._negated(cfg, progress)
        tasks = self.resolve_tasks(cfg.tasks)
        pre = self.pretrained()
        fts = [self.finetuned(t) for t in tasks]
        needs = method_spec("merge", cfg.method).needs
        side: dict = {}
        if needs == "importances":
            side["importances"] = self._importances(cfg, tasks, progress)
        elif needs == "masks":
            self._importances(cfg, tasks, progress)
            masks = self.masks(cfg, tasks)
            side["masks"] = [masks[t] for t in tasks]
        elif needs == "adaptation":
            from ..models.adaptation import adaptation_for

            side["adaptation"] = adaptation_for(
                self.source, tasks, device=self.device, progress=progress
            )
        progress(len(tasks), len(tasks), "merging")
        return merge(cfg.method, pre, fts, **cfg.method_params(), **side)

    def _importances(self, cfg: RunConfig, tasks: list[str], progress: Progress) -> list:
        imps = []
        for index, task in enumerate(tasks):
            progress(index, len(tasks), f"importance {cfg.importance} of {task}")
            imps.append(self.importance(task, cfg.importance, cfg.samples, cfg.seed))
        return imps

    def _negated(self, cfg: RunConfig, progress: Progress) -> StateDict:
        target = self.negation_target(cfg)
        pre = self.pretrained()
        side: dict = {}
        if method_spec("negate", cfg.method).needs == "importance":
            progress(0, 1, f"importance {cfg.importance} of {target}")
            side["importance"] = self.importance(target, cfg.importance, cfg.samples, cfg.seed)
        return negate(cfg.method, pre, pre, self.finetuned(target), **cfg.method_params(), **side)

    def negation_target(self, cfg: RunConfig) -> str:
        if cfg.target not in self.tasks:
            raise InputError(
                f"target task {cfg.target!r} is not in {self.source.name}; pick one of "
                f"{', '.join(self.tasks)}"
            )
        return str(cfg.target)

    def negation_mask(self, cfg: RunConfig) -> Mask:
        target = self.negation_target(cfg)
        imp = self.importance(target, cfg.importance, cfg.samples, cfg.seed)
        p = cfg.param("p")
        key = ("negation", target, cfg.importance, cfg.samples, cfg.seed, p)
        return self._masks.get(key, lambda: sta_negation_mask(imp, p))

    # --- accuracies -------------------------------------------------------------------------
    def evaluate(
        self,
        name: str,
        state: StateDict,
        tasks: Sequence[str],
        split: str,
        max_samples: int | None,
        progress: Progress = no_progress,
    ) -> pd.DataFrame:
        """Accuracy of one image tower on each task: DataFrame[model, task, split, accuracy]."""
        from ..models.evaluation import evaluate_states

        return evaluate_states(
            self.source,
            {name: state},
            tasks=list(tasks),
            split=split,
            device=self.device,
            max_samples=max_samples,
            progress=progress,
        )

    def reference(self, split: str, max_samples: int | None) -> pd.DataFrame:
        """Zero-shot and fine-tuned accuracy per task: DataFrame[task, zeroshot, finetuned]."""
        from ..models.evaluation import reference_accuracies

        key = (split, max_samples)
        return self._reference.get(
            key,
            lambda: reference_accuracies(
                self.source, split=split, device=self.device, max_samples=max_samples
            ),
        )

    def run_merge(self, cfg: RunConfig, progress: Progress = no_progress) -> pd.DataFrame:
        """Merge + evaluate: one row per task with zeroshot, finetuned, merged and normalised."""
        if cfg.action != "merge":
            raise InputError("this run config is a forgetting run; open it in the Forget tab")
        tasks = self.resolve_tasks(cfg.tasks)

        def compute() -> pd.DataFrame:
            state = self.merged_state(cfg, progress)
            acc = self.evaluate("merged", state, tasks, cfg.split, cfg.max_samples, progress)
            ref = self.reference(cfg.split, cfg.max_samples).set_index("task")
            table = pd.DataFrame({"task": tasks})
            table["zeroshot"] = [float(ref.loc[t, "zeroshot"]) for t in tasks]
            table["finetuned"] = [float(ref.loc[t, "finetuned"]) for t in tasks]
            table["merged"] = [float(acc.set_index("task").loc[t, "accuracy"]) for t in tasks]
            table["normalised"] = table["merged"] / table["finetuned"]
            table["zeroshot_normalised"] = table["zeroshot"] / table["finetuned"]
            return table

        return self._evals.get(("merge",) + self.result_key(cfg), compute)

    def run_negation(self, cfg: RunConfig, progress: Progress = no_progress) -> pd.DataFrame:
        """Forgetting: target and control accuracy of the pretrained and the edited model."""
        if cfg.action != "negate":
            raise InputError("this run config is a merge; open it in the Merge tab")
        target = self.negation_target(cfg)
        control = self.source.control_task
        tasks = [target] + ([control] if control else [])

        def compute() -> pd.DataFrame:
            state = self.merged_state(cfg, progress)
            before = self.evaluate(
                "pretrained", self.pretrained(), tasks, cfg.split, cfg.max_samples
            )
            after = self.evaluate("negated", state, tasks, cfg.split, cfg.max_samples, progress)
            table = pd.DataFrame(
                {
                    "role": ["target"] + (["control"] if control else []),
                    "task": tasks,
                    "before": before.set_index("task").loc[tasks, "accuracy"].to_numpy(),
                    "after": after.set_index("task").loc[tasks, "accuracy"].to_numpy(),
                }
            )
            table["ratio"] = table["after"] / table["before"].where(table["before"] > 0)
            return table

        return self._evals.get(("negate",) + cfg.key(), compute)

    def warm(self, max_samples: int | None, metric: str = "lp", samples: int = 32) -> None:
        """Compute what the first Run needs (reference accuracies, the default importance) so a
        visitor does not wait for it; the per-key locks make a concurrent request share it."""
        self.reference("test", max_samples)
        for task in self.tasks:
            self.importance(task, metric, samples, 0)

    def memo(self, key: tuple, compute):
        """Cache any other result of this source (analyses, sweeps) under ``key``."""
        return self._misc.get(key, compute)
