"""The linearised image tower: f(x; theta_0) + J f(x; theta_0) (theta - theta_0), Taylor at theta_0.

Linearised fine-tuning (Ortiz-Jimenez et al., 2023) trains this first-order Taylor expansion, and
its task vectors are combined and evaluated in it too: a merged model theta_0 + sum_t alpha_t tau_t
is the linearised model at that point, not the non-linear tower loaded with those weights. L-LoRA
(Tang et al., 2024) is the same expansion restricted to low-rank attention updates.

:class:`LinearizedTower` exposes exactly the wrapped tower's parameters and buffers under the same
names, so everything that loads states into a tower (evaluation, xi grids, mixers) works unchanged;
only its forward differs. The jvp is taken with :func:`torch.func.jvp` and is differentiable, so
the same module trains the linearised model.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..keys import VISUAL_PREFIX

__all__ = ["LINEARIZED_PARADIGMS", "LinearizedTower", "is_linearized", "linearized_forward"]

#: paradigms whose checkpoints are evaluated (and merged) in the linearised model
LINEARIZED_PARADIGMS = ("linearized", "l-lora")
#: one jvp at a time in a process (see linearized_forward)
_JVP_LOCK = threading.Lock()


def is_linearized(paradigm: str | None) -> bool:
    """Whether checkpoints of ``paradigm`` must be evaluated with the linearised forward."""
    return paradigm in LINEARIZED_PARADIGMS


def linearized_forward(
    module: nn.Module,
    theta0: Mapping[str, torch.Tensor],
    theta: Mapping[str, torch.Tensor],
    images: torch.Tensor,
) -> torch.Tensor:
    """f(x; theta0) + jvp at theta0 in the direction theta - theta0 (keys as ``module``'s own).

    Tensors missing from ``theta`` are taken as unchanged; buffers come from ``module``."""
    names = list(theta0)
    primals = tuple(theta0[n] for n in names)
    tangents = tuple((theta[n] - theta0[n]) if n in theta else torch.zeros_like(theta0[n])
                     for n in names)  # fmt: skip
    buffers = dict(module.named_buffers())

    def run(*params: torch.Tensor) -> torch.Tensor:
        return functional_call(module, {**buffers, **dict(zip(names, params))}, (images,))

    # forward AD's level and the attention fast-path switch are process-wide, not per thread:
    # two threads evaluating linearised towers at once (the xi grid's workers) would leave a
    # level or the switch to each other, so one jvp runs at a time
    with _JVP_LOCK:
        fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel has no forward AD
        try:  # and neither has the flash kernel of scaled_dot_product_attention: use the math one
            with sdpa_kernel(SDPBackend.MATH):
                out, change = jvp(run, primals, tangents)
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)
    return out + change


class LinearizedTower(nn.Module):
    """An image tower evaluated as its first-order Taylor expansion around ``theta0``.

    Its parameters *are* the wrapped tower's parameters (same objects, same names), so a state
    loaded into it is theta; theta0 is a frozen copy taken at construction (or given)."""

    linearized = True  #: read by the fast forward, which must not bypass this module

    def __init__(self, visual: nn.Module, theta0: Mapping[str, torch.Tensor] | None = None):
        super().__init__()
        object.__setattr__(self, "inner", visual)  # not a child: names stay the tower's own
        # the tower's own children, parameters and buffers, shared (add_module would see them
        # through __getattr__ and refuse)
        self._modules.update(visual._modules)
        self._parameters.update(visual._parameters)
        self._buffers.update(visual._buffers)
        self._non_persistent_buffers_set.update(visual._non_persistent_buffers_set)
        live = dict(visual.named_parameters())
        if theta0 is None:
            theta0 = {n: p.detach().clone() for n, p in live.items()}
        else:
            theta0 = {n.removeprefix(VISUAL_PREFIX): t for n, t in theta0.items()}
        self._theta0 = {n: theta0[n].to(p.device, p.dtype).detach() for n, p in live.items()}
        self.training = visual.training

    def _apply(self, fn, recurse=True):  # keep theta0 on the tower's device / dtype
        out = super()._apply(fn, recurse)
        self._theta0 = {n: fn(t) for n, t in self._theta0.items()}
        return out

    def train(self, mode: bool = True) -> LinearizedTower:
        self.inner.train(mode)
        return super().train(mode)

    @property
    def theta0(self) -> dict[str, torch.Tensor]:
        """The expansion point (tower parameter names, no prefix)."""
        return self._theta0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        theta = dict(self.inner.named_parameters())
        moved = any(not torch.equal(theta[n], t) for n, t in self._theta0.items())
        if not moved:  # at theta0 the expansion is the tower itself: skip the jvp
            return self.inner(images)
        return linearized_forward(self.inner, self._theta0, theta, images)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "inner"), name)
