"""What a user names is never read back to them: every CLI path that opens a file the user
named, pointed at a file holding a secret, answers one sentence without the secret."""

from __future__ import annotations

import pytest
from conftest import CANARY

from taskarith_core.cli import main


def _argvs(path, out):
    """Every way the CLI opens a user-named manifest, config or checkpoint."""
    path = str(path)
    return [
        ["analyse", "cosine", "--manifest", path, "--out", str(out / "analysis")],
        ["reproduce", "--manifest", path, "--protocol", "addition"],
        ["convert", "--manifest", path],
        ["evaluate", "--manifest", path, "--model", path],
        ["run", "--config", path],
        ["evaluate", "--model", path, "--trust-pickle", "--max-samples", "1"],
        [
            "convert", path, "--arch", "ViT-B-32", "--out", str(out / "c.safetensors"),
            "--trust-pickle",
        ],
        [
            "merge", "--method", "task_arithmetic", "--pretrained", path, "--finetuned", path,
            path, "--out", str(out / "m.safetensors"), "--trust-pickle",
        ],
    ]  # fmt: skip


def test_no_message_repeats_a_named_file(canary_files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for name, path in canary_files.items():
        for argv in _argvs(path, out):
            code = main(argv)
            said = capsys.readouterr()
            where = f"{name}: {' '.join(argv[:2])}"
            assert code == 2, where
            assert CANARY not in said.out + said.err, where
            assert "weights_only" not in said.err and "Traceback" not in said.err, where
            assert said.err.count("\n") == 1, where
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("name", ["key.yaml", "values.yaml", "nested.yaml", "broken.yaml"])
def test_manifest_loader_names_position_not_content(canary_files, name):
    from taskarith_core.errors import InputError
    from taskarith_core.real.manifest import load_manifest

    with pytest.raises(InputError) as info:
        load_manifest(canary_files[name])
    assert CANARY not in str(info.value)
