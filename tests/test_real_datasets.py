"""Benchmark class lists, class alignment to a dataset's label order, deterministic splits."""

from __future__ import annotations

import pytest
from PIL import Image

from taskarith_core.errors import InputError
from taskarith_core.real.datasets import (
    BENCHMARK_TASKS,
    DataSpec,
    align_classnames,
    builtin_task,
    open_pools,
    preprocess_for,
    split_indices,
    take_split,
)

SIZES = {"SUN397": 397, "Cars": 196, "RESISC45": 45, "EuroSAT": 10, "SVHN": 10, "GTSRB": 43,
         "MNIST": 10, "DTD": 47}  # fmt: skip


@pytest.mark.parametrize("task", BENCHMARK_TASKS)
def test_builtin_lists(task):
    spec = builtin_task(task)
    assert len(spec["classnames"]) == len(spec["folders"]) == SIZES[task]
    assert len(set(spec["folders"])) == SIZES[task]
    assert spec["templates"] and all("{}" in t for t in spec["templates"])
    assert builtin_task(task.lower()) == spec


def test_align_follows_the_dataset_order_and_refuses_strangers():
    folders, names = ["AnnualCrop", "Forest"], ["annual crop land", "forest"]
    assert align_classnames("t", ["forest", "annual_crop"], names, folders) == [
        "forest",
        "annual crop land",
    ]
    with pytest.raises(InputError, match="class 'Desert'"):
        align_classnames("t", ["Forest", "Desert"], names, folders)
    with pytest.raises(InputError, match="no folder for 'Forest'"):
        align_classnames("t", ["AnnualCrop"], names, folders)
    with pytest.raises(InputError, match="3 classes but the class list has 2"):
        align_classnames("t", ["a", "b", "c"], ["x", "y"], None)
    assert align_classnames("t", ["sea_lake"], None, None) == ["sea lake"]


def test_split_indices_are_disjoint_and_deterministic():
    a = split_indices(100, 0.2, 0.1, seed=3)
    assert a == split_indices(100, 0.2, 0.1, seed=3)
    assert [len(x) for x in a] == [20, 10, 70]
    assert sorted(a[0] + a[1] + a[2]) == list(range(100))
    assert a != split_indices(100, 0.2, 0.1, seed=4)


def _tree(root, split, classes, per_class=4):
    for index, name in enumerate(classes):
        folder = root / split / name
        folder.mkdir(parents=True)
        for j in range(per_class):
            Image.new("RGB", (20, 12), (40 * index, 30 * j, 90)).save(folder / f"{j}.png")


def test_imagefolder_splits(tmp_path):
    _tree(tmp_path, "train", ["cat", "dog"], per_class=5)
    _tree(tmp_path, "test", ["cat", "dog"], per_class=2)
    spec = DataSpec(format="imagefolder", root=".", val_fraction=0.2)
    pools, ids = open_pools(spec, tmp_path, "toy")
    assert ids == ["cat", "dog"] and set(pools) == {"train", "test"}
    transform = preprocess_for("ViT-B-32")
    sizes = {s: len(take_split(pools, s, spec, transform)) for s in ("train", "val", "test")}
    assert sizes == {"train": 8, "val": 2, "test": 4}
    image, label = take_split(pools, "test", spec, transform)[3]
    assert tuple(image.shape) == (3, 224, 224) and label == 1


def test_split_folders_with_other_classes_are_refused(tmp_path):
    _tree(tmp_path, "train", ["cat", "dog"])
    _tree(tmp_path, "test", ["cat", "cow"])
    with pytest.raises(InputError, match="other class folders"):
        open_pools(DataSpec(format="imagefolder", root="."), tmp_path, "toy")


def test_missing_data_is_refused(tmp_path):
    with pytest.raises(InputError, match="data folder .* not found"):
        open_pools(DataSpec(format="imagefolder", root="nope"), tmp_path, "toy")
    spec = DataSpec(format="torchvision", root=".", dataset="MNIST")
    with pytest.raises(InputError, match="torchvision MNIST not found"):
        open_pools(spec, tmp_path, "MNIST")
    with pytest.raises(InputError, match="'Food101' is not supported"):
        open_pools(DataSpec(format="torchvision", root=".", dataset="Food101"), tmp_path, "x")


def test_verified_lists_follow_task_vectors():
    """SUN397 names are the folder names with '/' and '_' as spaces (task_vectors' rule); GTSRB
    uses CLIP's descriptive sign names in class-id order; each file names its source."""
    sun = builtin_task("SUN397")
    assert sun["classnames"] == [f.replace("/", " ").replace("_", " ") for f in sun["folders"]]
    gtsrb = builtin_task("GTSRB")
    assert gtsrb["classnames"][14] == "stop"
    assert gtsrb["classnames"][6] == "end / de-restriction of 80 kph speed limit"
    assert gtsrb["folders"][6] == "00006"
    cars = builtin_task("Cars")
    assert cars["classnames"][0] == "AM General Hummer SUV 2000"
    assert cars["classnames"][-1] == "smart fortwo Convertible 2012"
    for task in ("SUN397", "GTSRB", "Cars"):
        assert "task_vectors" in builtin_task(task)["sources"]["templates"]
