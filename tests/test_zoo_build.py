"""The miniature zoo goes through build_zoo and loads back with open_clip and ZooSource."""

from __future__ import annotations

import json
import shutil

import open_clip
import pytest
import torch

from taskarith_core.cli import main
from taskarith_core.errors import InputError
from taskarith_core.io import save_state_dict
from taskarith_core.keys import is_attention_weight
from taskarith_core.models.clip import load_visual_state
from taskarith_core.zoo import MINI_SPEC, PARADIGMS, load_zoo
from taskarith_core.zoo.finetune import classify


def test_files_and_open_clip_loading(mini_zoo_root):
    for name in ("config.json", "tasks.json", "pretrained.safetensors", "heads.safetensors"):
        assert (mini_zoo_root / name).is_file()
    for paradigm in PARADIGMS:
        for task in MINI_SPEC.data.tasks:
            assert (mini_zoo_root / paradigm / f"{task}.safetensors").is_file()
    info = json.loads((mini_zoo_root / "tasks.json").read_text())
    model = open_clip.create_model(
        info["arch"], pretrained=str(mini_zoo_root / "pretrained.safetensors")
    )
    assert model.visual.image_size == (28, 28)


def test_source_evaluates_every_paradigm(mini_zoo_root):
    for paradigm in PARADIGMS:
        source = load_zoo(paradigm, mini_zoo_root)
        assert source.tasks == list(MINI_SPEC.data.tasks) and source.control_task == "symbols"
        visual = source.build_visual()
        for task in source.tasks:
            images, labels = source.dataset(task, "test").tensors
            load_visual_state(visual, source.load_finetuned(task))
            logits = classify(visual, images, source.head(task))
            assert logits.shape == (len(labels), len(source.classnames(task)))


def test_sparse_paradigms_change_only_their_weights(mini_zoo_root):
    pre = load_zoo("full", mini_zoo_root).load_pretrained()
    task = MINI_SPEC.data.tasks[0]
    attention = load_zoo("attention", mini_zoo_root).load_finetuned(task)
    changed = {k for k in pre if not torch.equal(pre[k], attention[k])}
    assert changed and all(is_attention_weight(k) for k in changed)
    talos = load_zoo("talos", mini_zoo_root)
    ft, mask = talos.load_finetuned(task), talos.talos_mask(task)
    for key in pre:
        frozen = mask[key] == 0
        assert torch.equal(ft[key][frozen], pre[key][frozen]), key
    assert mask["visual.class_embedding"].sum() == 0 and mask["visual.proj"].sum() == 0


def test_talos_mask_density(mini_zoo_root):
    mask = load_zoo("talos", mini_zoo_root).talos_mask(MINI_SPEC.data.tasks[1])
    maskable = [
        k for k in mask if not k.endswith(("class_embedding", "positional_embedding", "proj"))
    ]
    kept = sum(int(mask[k].sum()) for k in maskable) / sum(mask[k].numel() for k in maskable)
    assert abs(kept - (1 - MINI_SPEC.talos.sparsity)) < 0.01


def test_missing_asset_and_bad_checkpoint(mini_zoo_root, tmp_path):
    broken = tmp_path / "zoo"
    shutil.copytree(mini_zoo_root, broken)
    (broken / "talos" / "shapes.mask.safetensors").unlink()
    with pytest.raises(InputError, match="zoo build"):
        load_zoo("talos", broken)
    with pytest.raises(InputError, match="unknown paradigm"):
        load_zoo("lora", broken)
    source = load_zoo("full", broken)
    state = source.load_finetuned("shapes")
    state["visual.proj"] = torch.zeros(3, 3)
    save_state_dict(state, broken / "full" / "shapes.safetensors")
    with pytest.raises(InputError, match="visual.proj"):
        source.load_finetuned("shapes")
    with pytest.raises(InputError, match="unknown task"):
        source.load_finetuned("letters")


def test_cli_info_and_errors(mini_zoo_root, tmp_path, capsys):
    assert main(["zoo", "info", "--root", str(tmp_path)]) == 2
    assert "zoo build" in capsys.readouterr().err
    try:
        code = main(["zoo", "build", "--threads", "0"])
    except SystemExit as exc:  # argparse usage errors: exit code 2 either way
        code = exc.code
    assert code == 2 and "at least 1" in capsys.readouterr().err
    out = tmp_path / "new_zoo"
    assert main(["zoo", "build", "--out", str(out), "--paradigms", "lora"]) == 2
    assert "unknown paradigm" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".new_zoo.building").exists()
    assert main(["zoo", "card", "--root", str(tmp_path), "--paradigms", "full"]) == 2


def test_resume_only_with_the_same_recipe(mini_zoo_root, tmp_path):
    from taskarith_core.zoo.arch import build_vocabulary
    from taskarith_core.zoo.build import _all_texts, _can_resume, _spec_json

    info = json.loads(
        json.dumps(_spec_json(MINI_SPEC, build_vocabulary(_all_texts(MINI_SPEC.data))))
    )
    assert _can_resume(mini_zoo_root, info)
    other = json.loads(json.dumps(info))
    other["build"]["pretrain"]["steps"] += 1
    assert not _can_resume(mini_zoo_root, other)
    assert not _can_resume(tmp_path, info)


def test_l_lora_and_lota_change_only_what_they_may(mini_zoo_root):
    pre = load_zoo("full", mini_zoo_root).load_pretrained()
    task = MINI_SPEC.data.tasks[0]
    lora = load_zoo("l-lora", mini_zoo_root).load_finetuned(task)
    changed = {k for k in pre if not torch.equal(pre[k], lora[k])}
    assert changed and all(is_attention_weight(k) for k in changed)
    key = "visual.transformer.resblocks.0.attn.out_proj.weight"
    rank = torch.linalg.matrix_rank((lora[key] - pre[key]).double(), atol=1e-3)
    assert rank <= MINI_SPEC.lora.rank < pre[key].shape[0]
    lota = load_zoo("lota", mini_zoo_root)
    ft, mask = lota.load_finetuned(task), lota.talos_mask(task)
    maskable = [k for k in mask if k != "visual.proj" and not k.endswith("_embedding")]
    kept = sum(int(mask[k].sum()) for k in maskable) / sum(mask[k].numel() for k in maskable)
    assert abs(kept - (1 - MINI_SPEC.lota.sparsity)) < 0.01
    for key in pre:
        assert torch.equal(ft[key][mask[key] == 0], pre[key][mask[key] == 0]), key


def test_linearised_paradigms_are_evaluated_linearised(mini_zoo_root):
    from taskarith_core.models.evaluation import evaluate_states
    from taskarith_core.models.linearized import LinearizedTower

    lin = load_zoo("linearized", mini_zoo_root)
    assert isinstance(lin.build_visual(), LinearizedTower)
    assert not isinstance(load_zoo("full", mini_zoo_root).build_visual(), LinearizedTower)
    task = MINI_SPEC.data.tasks[0]
    state = lin.load_finetuned(task)
    accuracy = evaluate_states(lin, {"m": state}, [task])["accuracy"].iloc[0]
    visual = load_visual_state(lin.build_visual(), state)
    images, labels = lin.dataset(task, "test").tensors
    with torch.no_grad():
        linear = classify(visual, images, lin.head(task))
        plain = classify(visual.inner, images, lin.head(task))  # the tower itself at theta
    assert not torch.allclose(linear, plain, atol=1e-4)
    assert accuracy == pytest.approx(float((linear.argmax(1) == labels).float().mean()))


def test_learning_rates_chosen_on_validation_are_recorded(mini_zoo_root):
    info = json.loads((mini_zoo_root / "tasks.json").read_text())
    for paradigm, grid in MINI_SPEC.lr_grid.items():
        record = info["selection"][paradigm]
        assert record["split"] == "val" and record["task"] == MINI_SPEC.select_task
        assert set(record["accuracy"]) == {repr(lr) for lr in grid}
        best = max(record["accuracy"].values())
        assert record["accuracy"][repr(record["lr"])] == best


def test_a_paradigm_the_zoo_lacks_is_one_sentence(mini_zoo_root, tmp_path):
    smaller = tmp_path / "zoo"
    shutil.copytree(mini_zoo_root, smaller)
    info = json.loads((smaller / "tasks.json").read_text())
    info["paradigms"] = ["full", "attention", "talos"]
    (smaller / "tasks.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="has no 'lota' checkpoints") as err:
        load_zoo("lota", smaller)
    assert "\n" not in str(err.value)


def test_adding_paradigms_to_a_zoo_gives_the_files_of_a_whole_build(mini_zoo_root, tmp_path):
    """``zoo build --paradigms`` into an existing zoo: the same bytes as the one-go build."""
    from taskarith_core.zoo import build_zoo

    new = ("linearized", "l-lora", "lota")
    partial = tmp_path / "zoo"
    shutil.copytree(mini_zoo_root, partial)
    for paradigm in new:
        shutil.rmtree(partial / paradigm)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture's build ran on one thread too
    try:
        build_zoo(partial, MINI_SPEC, train_only=new)
    finally:
        torch.set_num_threads(threads)
    for paradigm in new:
        for path in sorted((mini_zoo_root / paradigm).iterdir()):
            assert (partial / paradigm / path.name).read_bytes() == path.read_bytes(), path.name
    assert (partial / "tasks.json").read_bytes() == (mini_zoo_root / "tasks.json").read_bytes()
    stages = json.loads((partial / "build_time.json").read_text())["stages"]
    assert set(stages) == {",".join(new)}
