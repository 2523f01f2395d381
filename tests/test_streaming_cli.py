"""The file-based engine and its CLI: same numbers as in memory, and clean refusals of bad input."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from taskarith_core.cli import main
from taskarith_core.fusion import merge, negate
from taskarith_core.masks import sta_fusion_masks

KEYS = {
    "visual.conv1.weight": (8, 3, 2, 2),
    "visual.transformer.resblocks.0.attn.in_proj_weight": (24, 8),
    "visual.transformer.resblocks.0.attn.in_proj_bias": (24,),
    "visual.transformer.resblocks.0.mlp.c_fc.weight": (16, 8),
    "visual.ln_post.weight": (8,),
}


def _random_state(seed: int, scale: float = 1.0, base=None) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (base[k] if base else 0) + scale * torch.randn(shape, generator=gen)
        for k, shape in KEYS.items()
    }


@pytest.fixture()
def files(tmp_path):
    pre = _random_state(0)
    fts = [_random_state(t + 1, 0.05, pre) for t in range(3)]
    imps = [{k: v.abs() for k, v in _random_state(10 + t).items()} for t in range(3)]
    paths = {"pre": tmp_path / "pre.safetensors"}
    save_file(pre, paths["pre"])
    for t, (ft, imp) in enumerate(zip(fts, imps)):
        paths[f"ft{t}"] = tmp_path / f"task{t}.safetensors"
        paths[f"imp{t}"] = tmp_path / f"imp{t}.safetensors"
        save_file(ft, paths[f"ft{t}"])
        save_file(imp, paths[f"imp{t}"])
    return tmp_path, paths, pre, fts, imps


def _fts(paths, n=3):
    return [str(paths[f"ft{t}"]) for t in range(n)]


def _imps(paths, n=3):
    return [str(paths[f"imp{t}"]) for t in range(n)]


@pytest.mark.parametrize(
    "method,flags,params",
    [
        ("sta", ["--p", "0.7"], {"p": 0.7}),
        ("task_arithmetic", ["--lam", "0.3"], {"lam": 0.3}),
        ("ties", ["--keep", "0.2", "--lam", "1.0"], {"keep": 0.2, "lam": 1.0}),
        (
            "dare",
            ["--dare-rate", "0.5", "--lam", "0.4", "--dare-seed", "3"],
            {"dare_rate": 0.5, "lam": 0.4, "dare_seed": 3},
        ),
        ("consensus", ["--agreement", "2", "--lam", "0.4"], {"agreement": 2, "lam": 0.4}),
        (
            "consensus",
            ["--tall-lambda", "0.2", "0.5", "0.3"],
            {"tall_lambda": [0.2, 0.5, 0.3]},
        ),
    ],
)
def test_cli_merge_equals_in_memory_merge(files, method, flags, params):
    tmp, paths, pre, fts, imps = files
    out = tmp / "out.safetensors"
    argv = [
        "merge",
        "--method",
        method,
        "--pretrained",
        str(paths["pre"]),
        "--finetuned",
        *_fts(paths),
        "--out",
        str(out),
        *flags,
    ]
    if method == "sta":
        argv += ["--importance", *_imps(paths)]
    assert main(argv) == 0
    extra = {"importances": imps} if method == "sta" else {}
    expected = merge(method, pre, fts, **extra, **params)
    got = load_file(out)
    for key in KEYS:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)


def test_cli_masks_then_masked_arithmetic(files):
    tmp, paths, pre, fts, imps = files
    masks_out, rates = tmp / "masks.safetensors", tmp / "rates.csv"
    argv = [
        "masks",
        "--p",
        "0.8",
        "--pretrained",
        str(paths["pre"]),
        "--finetuned",
        *_fts(paths),
        "--importance",
        *_imps(paths),
        "--out",
        str(masks_out),
        "--rates",
        str(rates),
    ]
    assert main(argv) == 0
    expected = sta_fusion_masks(imps, 0.8)
    flat = load_file(masks_out)
    key = "visual.transformer.resblocks.0.attn.in_proj_weight"
    assert torch.equal(flat[f"task1/{key}"].bool(), expected[1][key])
    text = rates.read_text().splitlines()
    assert text[0] == "task,tensor,block,kind,numel,selected,rate" and len(text) == 1 + 3 * len(
        KEYS
    )
    out = tmp / "masked.safetensors"
    argv = [
        "merge",
        "--method",
        "masked_arithmetic",
        "--lam",
        "1.0",
        "--pretrained",
        str(paths["pre"]),
        "--finetuned",
        *_fts(paths),
        "--masks",
        str(masks_out),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    sta = merge("sta", pre, fts, importances=imps, p=0.8)
    torch.testing.assert_close(load_file(out)[key], sta[key], atol=1e-6, rtol=0)


def test_cli_negate_sta_and_ta(files):
    tmp, paths, pre, fts, imps = files
    out = tmp / "neg.safetensors"
    argv = [
        "negate",
        "--method",
        "sta",
        "--p",
        "0.9",
        "--pretrained",
        str(paths["pre"]),
        "--finetuned",
        str(paths["ft0"]),
        "--importance",
        str(paths["imp0"]),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    expected = negate("sta", pre, pre, fts[0], importance=imps[0], p=0.9)
    for key in KEYS:
        torch.testing.assert_close(load_file(out)[key], expected[key], atol=1e-6, rtol=0)
    argv = [
        "negate",
        "--method",
        "task_arithmetic",
        "--lam",
        "0.5",
        "--pretrained",
        str(paths["pre"]),
        "--finetuned",
        str(paths["ft0"]),
        "--base",
        str(paths["ft1"]),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    expected = negate("task_arithmetic", fts[1], pre, fts[0], lam=0.5)
    for key in KEYS:
        torch.testing.assert_close(load_file(out)[key], expected[key], atol=1e-6, rtol=0)


def _bad(capsys, argv, match, out):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and match in err, err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temp file left either


def _merge_argv(paths, out, fts=None, extra=()):
    return [
        "merge",
        "--method",
        "task_arithmetic",
        "--lam",
        "0.3",
        "--pretrained",
        str(paths["pre"]),
        "--finetuned",
        *(fts or _fts(paths)),
        "--out",
        str(out),
        *extra,
    ]


def test_bad_files(files, capsys):
    tmp, paths, pre, fts, imps = files
    out = tmp / "out.safetensors"
    _bad(
        capsys,
        _merge_argv(paths, out, [str(tmp / "missing.safetensors"), _fts(paths)[0]]),
        "not found",
        out,
    )
    truncated = tmp / "trunc.safetensors"
    truncated.write_bytes(paths["ft0"].read_bytes()[:-40])
    _bad(
        capsys, _merge_argv(paths, out, [str(truncated), _fts(paths)[1]]), "trunc.safetensors", out
    )
    garbage = tmp / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    _bad(capsys, _merge_argv(paths, out, [str(garbage), _fts(paths)[1]]), "not a valid", out)


def test_mismatches_and_non_finite(files, capsys):
    tmp, paths, pre, fts, imps = files
    out = tmp / "out.safetensors"
    odd = dict(fts[0])
    odd["visual.ln_post.weight"] = torch.ones(9)
    save_file(odd, tmp / "shape.safetensors")
    _bad(
        capsys,
        _merge_argv(paths, out, [str(tmp / "shape.safetensors"), _fts(paths)[1]]),
        "shape (9,)",
        out,
    )
    fewer = {k: v for k, v in fts[0].items() if k != "visual.ln_post.weight"}
    save_file(fewer, tmp / "keys.safetensors")
    _bad(
        capsys,
        _merge_argv(paths, out, [str(tmp / "keys.safetensors"), _fts(paths)[1]]),
        "visual.ln_post.weight",
        out,
    )
    save_file({k: v.double() for k, v in fts[0].items()}, tmp / "f64.safetensors")
    _bad(
        capsys, _merge_argv(paths, out, [str(tmp / "f64.safetensors"), _fts(paths)[1]]), "F64", out
    )
    nan = dict(fts[0])
    nan["visual.conv1.weight"] = nan["visual.conv1.weight"].clone()
    nan["visual.conv1.weight"][0, 0, 0, 0] = float("nan")
    save_file(nan, tmp / "nan.safetensors")
    _bad(
        capsys,
        _merge_argv(paths, out, [str(tmp / "nan.safetensors"), _fts(paths)[1]]),
        "NaN or inf",
        out,
    )


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--method", "sta", "--p", "1.5"], "p=1.5 is outside [0, 1]"),
        (["--method", "ties", "--keep", "1.5"], "keep=1.5 is outside (0, 1]"),
        (["--method", "sta", "--lam", "0.3"], "takes no --lam; its parameters: --p"),
        (["--method", "dare", "--dare-rate", "1"], "dare_rate=1 is outside [0, 1)"),
        (["--method", "task_arithmetic", "--lam", "inf"], "not a finite number"),
        (["--method", "task_arithmetic", "--lam", "nan"], "not a finite number"),
        (["--method", "magic"], "unknown merge method 'magic'"),
    ],
)
def test_bad_values(files, capsys, extra, match):
    tmp, paths, *_ = files
    out = tmp / "out.safetensors"
    argv = [
        "merge",
        "--pretrained",
        str(paths["pre"]),
        "--finetuned",
        *_fts(paths),
        "--out",
        str(out),
        *extra,
    ]
    if "sta" in extra:
        argv += ["--importance", *_imps(paths)]
    _bad(capsys, argv, match, out)


def test_one_task_and_unwritable_folder(files, capsys):
    tmp, paths, *_ = files
    out = tmp / "out.safetensors"
    _bad(capsys, _merge_argv(paths, out, _fts(paths, 1)), "at least 2", out)
    (tmp / "a_file").write_text("x")
    _bad(
        capsys,
        _merge_argv(paths, tmp / "a_file" / "out.safetensors"),
        "is a file, not a folder",
        tmp / "a_file" / "out.safetensors",
    )
    locked = tmp / "locked"
    locked.mkdir(mode=0o500)
    if not __import__("os").access(locked, __import__("os").W_OK):  # root can write anywhere
        _bad(
            capsys,
            _merge_argv(paths, locked / "o.safetensors"),
            "not writable",
            locked / "o.safetensors",
        )


def test_pickle_refused_unless_trusted(files, capsys):
    tmp, paths, pre, fts, imps = files
    out = tmp / "out.safetensors"
    torch.save(fts[0], tmp / "ft0.pt")
    argv = _merge_argv(paths, out, [str(tmp / "ft0.pt"), _fts(paths)[1]])
    _bad(capsys, argv, "--trust-pickle", out)
    assert main([*argv, "--trust-pickle"]) == 0
    expected = merge("task_arithmetic", pre, fts[:2], lam=0.3)
    torch.testing.assert_close(
        load_file(out)["visual.conv1.weight"], expected["visual.conv1.weight"]
    )


def test_module_entry_point_and_help(files):
    tmp, paths, *_ = files
    out = tmp / "ta.safetensors"
    run = subprocess.run(
        [sys.executable, "-m", "taskarith_core", *_merge_argv(paths, out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(
        load_file.__module__
        and __import__("safetensors").safe_open(str(out), "pt").metadata()["params"]
    ) == {"lam": 0.3, "dare_rate": 0.0, "dare_seed": 0}
    help_text = subprocess.run(
        [sys.executable, "-m", "taskarith_core", "merge", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "Eq. 15-16" in help_text and "--importance" in help_text
