"""TaLoS: Fisher scores are per-example squared gradients; calibration and masking as specified."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from taskarith_core.models.clip import create_clip, register_arch
from taskarith_core.zoo.arch import model_config, to_float
from taskarith_core.zoo.finetune import FinetuneConfig, classify, finetune
from taskarith_core.zoo.talos import TalosConfig, calibrate_mask, fisher_scores, is_maskable


def _tiny():
    torch.manual_seed(0)
    model = create_clip(register_arch(model_config(10, 32, 1, 32, 16), "zoo-talos-test"))
    head = F.normalize(torch.randn(4, 16), dim=-1) * 10
    images = torch.randint(0, 256, (12, 3, 28, 28), dtype=torch.uint8)
    return model.visual, head, images


def test_fisher_matches_per_example_loop():
    visual, head, images = _tiny()
    gen = torch.Generator().manual_seed(3)
    scores = fisher_scores(visual, head, images, batch_size=5, generator=gen)
    gen = torch.Generator().manual_seed(3)
    expected = {n: torch.zeros_like(p) for n, p in visual.named_parameters()}
    for start in range(0, 12, 5):
        x = to_float(images[start : start + 5])
        with torch.no_grad():
            y = torch.multinomial(F.softmax(classify(visual, x, head), -1), 1, generator=gen)[:, 0]
        for i in range(len(x)):
            visual.zero_grad()
            F.log_softmax(classify(visual, x[i : i + 1], head), -1)[0, y[i]].backward()
            for n, p in visual.named_parameters():
                expected[n] += p.grad.pow(2)
    for n, value in expected.items():
        torch.testing.assert_close(scores["visual." + n], value, rtol=1e-3, atol=1e-9)


def test_calibration_density_and_frozen_embeddings():
    visual, head, images = _tiny()
    mask = calibrate_mask(
        visual, head, images, TalosConfig(sparsity=0.8, rounds=3, batches_per_round=1, batch_size=6)
    )
    maskable = [k for k in mask if is_maskable(k)]
    kept = sum(int(mask[k].sum()) for k in maskable) / sum(mask[k].numel() for k in maskable)
    assert abs(kept - 0.2) < 0.005
    for key in ("visual.class_embedding", "visual.positional_embedding", "visual.proj"):
        assert mask[key].sum() == 0


def test_masked_finetune_moves_only_trainable_weights():
    visual, head, images = _tiny()
    before = {n: p.detach().clone() for n, p in visual.named_parameters()}
    mask = {
        "visual." + n: (torch.rand_like(p) < 0.3).to(torch.uint8)
        for n, p in visual.named_parameters()
    }
    labels = torch.arange(12) % 4
    finetune(visual, head, images, labels, FinetuneConfig(steps=3, batch_size=6, warmup=1), mask)
    moved = 0
    for n, p in visual.named_parameters():
        gate = mask["visual." + n].bool()
        assert torch.equal(p[~gate], before[n][~gate]), n
        moved += int((p[gate] != before[n][gate]).sum())
    assert moved > 0
