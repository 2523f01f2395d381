"""The compact vocabulary keeps open_clip's conventions; the config builds with open_clip."""

from __future__ import annotations

import open_clip
import torch

from taskarith_core.models.clip import create_clip, register_arch
from taskarith_core.zoo.arch import CompactTokenizer, build_vocabulary, model_config, to_float


def test_compact_tokenizer_keeps_order_and_eot_max():
    vocab = build_vocabulary(["a photo of a circle.", "the number seven"])
    tok = CompactTokenizer(vocab)
    ids = tok(["a photo of a circle."])
    base = open_clip.SimpleTokenizer(context_length=16)(["a photo of a circle."])
    assert ids.shape == base.shape
    assert ids.max() == len(vocab) - 1  # end-of-text keeps the largest id: argmax pooling works
    assert torch.equal(ids.argmax(-1), base.argmax(-1))
    assert torch.equal(ids == 0, base == 0)


def test_unknown_words_map_to_padding():
    tok = CompactTokenizer(build_vocabulary(["circle"]))
    known, unknown = tok(["circle"]), tok(["zebra"])
    assert (known != 0).sum() == 3 and (unknown != 0).sum() == 2  # sot, eot only


def test_config_builds_with_open_clip():
    vocab = build_vocabulary(["a photo of a circle."])
    name = register_arch(model_config(len(vocab), width=32, layers=1, text_width=32), "zoo-test")
    model = create_clip(name)
    img = model.encode_image(to_float(torch.zeros(2, 3, 28, 28, dtype=torch.uint8)))
    txt = model.encode_text(CompactTokenizer(vocab)(["a circle", "a photo"]))
    assert img.shape == txt.shape == (2, 64)
    assert model.visual.transformer.resblocks[0].attn.num_heads == 1
