"""Task data: deterministic, balanced, disjoint handwritten sources, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taskarith_core.errors import InputError
from taskarith_core.zoo.data import DataSpec, _handwritten_sources, load_split, pretrain_mixture
from taskarith_core.zoo.tasks import CONTROL_TASK, TASKS

SMALL = DataSpec(sizes={"train": 40, "val": 20, "test": 30}, pretrain_per_task=20)


@pytest.mark.parametrize("task", list(TASKS))
def test_split_shape_and_balance(task):
    images, labels = load_split(task, "test", spec=SMALL)
    assert images.shape == (30, 3, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    counts = torch.bincount(labels, minlength=len(TASKS[task].classnames))
    assert counts.max() - counts.min() <= 1
    assert images.float().std() > 10  # not blank


def test_splits_are_reproducible_and_distinct():
    first, _ = load_split("shapes", "val", spec=SMALL)
    from taskarith_core.zoo import data

    data._generate.cache_clear()
    again, _ = load_split("shapes", "val", spec=SMALL)
    other, _ = load_split("shapes", "test", spec=SMALL)
    assert torch.equal(first, again)
    assert not torch.equal(first[:20], other[:20])


def test_handwritten_sources_disjoint():
    parts = [set(_handwritten_sources(s, 0).tolist()) for s in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sum(map(len, parts)) == 1797


def test_pretrain_mixture_covers_families_and_control():
    spec = DataSpec(tasks=("digits", "shapes"), sizes=SMALL.sizes, pretrain_per_task=20)
    images, owners = pretrain_mixture(spec)
    families = {t for t, _ in owners}
    assert families == {"printed_digits", "shapes", CONTROL_TASK}  # no handwritten images
    assert len(images) == len(owners) == 20 * 2 + 40


def test_bad_task_and_split(tmp_path):
    with pytest.raises(InputError, match="unknown task 'nope'"):
        load_split("nope", "test", spec=SMALL)
    with pytest.raises(InputError, match="unknown split"):
        load_split("shapes", "training", spec=SMALL)
    with pytest.raises(InputError, match="zoo build"):
        load_split("shapes", "test", root=tmp_path)


def test_labels_are_seeded_by_spec():
    a = load_split("arrows", "test", spec=SMALL)[1]
    b = load_split("arrows", "test", spec=DataSpec(sizes=SMALL.sizes, seed=1))[1]
    assert not np.array_equal(a.numpy(), b.numpy())


def test_pretrain_control_adds_fresh_control_images():
    base = DataSpec(tasks=("shapes",), sizes=SMALL.sizes, pretrain_per_task=20)
    more = DataSpec(tasks=("shapes",), sizes=SMALL.sizes, pretrain_per_task=20, pretrain_control=30)
    images, owners = pretrain_mixture(base)
    extra_images, extra_owners = pretrain_mixture(more)
    assert len(extra_owners) == len(owners) + 30
    assert torch.equal(extra_images[: len(images)], images)  # the old mixture is a prefix
    added = extra_images[len(images) :]
    assert {t for t, _ in extra_owners[len(owners) :]} == {CONTROL_TASK}
    control_train, _ = load_split(CONTROL_TASK, "train", spec=more)
    control_test, _ = load_split(CONTROL_TASK, "test", spec=more)
    flat = added.reshape(len(added), -1)
    for split in (control_train, control_test):  # drawn apart from the splits, not copied
        assert not (flat[:, None] == split.reshape(len(split), -1)[None]).all(-1).any()


def test_control_sizes_resize_only_the_controls_splits():
    from taskarith_core.zoo.data import tasks_json

    big = DataSpec(tasks=("shapes",), sizes=SMALL.sizes, control_sizes={"val": 50, "test": 60})
    plain = DataSpec(tasks=("shapes",), sizes=SMALL.sizes)
    assert len(load_split(CONTROL_TASK, "val", spec=big)[1]) == 50
    assert len(load_split(CONTROL_TASK, "test", spec=big)[1]) == 60
    assert len(load_split("shapes", "test", spec=big)[1]) == 30  # tasks keep ``sizes``
    # the control's train split (part of the pretraining mixture) is untouched
    assert torch.equal(
        load_split(CONTROL_TASK, "train", spec=big)[0],
        load_split(CONTROL_TASK, "train", spec=plain)[0],
    )
    info = tasks_json(big)["task_info"]
    assert info[CONTROL_TASK]["sizes"] == {"train": 40, "val": 50, "test": 60}
    assert info["shapes"]["sizes"] == SMALL.sizes
