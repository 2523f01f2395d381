"""Every command in the README's command blocks parses, and runs on the shipped zoo.

The commands are taken from the README's fenced ``bash`` blocks as written. To keep the run to a
few minutes, and to never overwrite the shipped zoo, the test changes only what this table says:

- file names in the examples (PRE.safetensors, A.safetensors, IA.safetensors, MASKS.safetensors,
  run_config.json, ...) are files of the zoo written into a temporary folder under those names
  (PRE / BASE: its pretrained image tower in the files' dtype; A, B, C, T, FT, M: fine-tuned
  towers; IA, IB, IC, IT: lp importances; MASKS: the README's own ``masks`` command;
  run_config.json: a page run config);
- ``...`` stands for the files of the line above: ``--pretrained PRE.safetensors --finetuned
  A.safetensors B.safetensors --out OUT.safetensors``; ``[--flag VALUE]`` is run with the flag;
- :data:`SMALLER` appends the smallest sizes the flags allow to some commands (a later flag
  wins), and sends ``zoo build`` to a temporary folder;
- commands that name a manifest of real checkpoints (``my.yaml``) are parsed, not run.

One command also runs verbatim in a subprocess from the project folder, as a user types it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from taskarith_core.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PREFIX = ".venv/bin/python -m taskarith_core"
#: what ``...`` stands for in the README's merge lines
ELLIPSIS = (
    "--pretrained PRE.safetensors --finetuned A.safetensors B.safetensors --out OUT.safetensors"
)
#: (leading words of a command, flags appended to it)
SMALLER: list[tuple[tuple[str, ...], list[str]]] = [
    (("analyse", "xi"), ["--points", "2", "--samples", "8"]),
    (("evaluate",), ["--max-samples", "8"]),
    (("importance",), ["--samples", "2"]),
    (("reproduce",), ["--tasks", "digits,letters", "--max-samples", "4", "--samples", "2"]),
    (("zoo", "build"), ["--out", "{tmp}/zoo", "--no-card"]),
]


def readme_commands() -> list[str]:
    """The taskarith_core commands of the README's bash blocks, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith(PREFIX):
                commands.append(line)
    return commands


def argv_of(command: str, tmp: Path) -> list[str]:
    """The argument list of a README command with the test's substitutions (module docstring)."""
    words = shlex.split(command, comments=True)[len(PREFIX.split()) :]
    out: list[str] = []
    for word in words:
        if word == "...":
            out += ELLIPSIS.split()
        else:
            out.append(word.strip("[]"))
    for lead, extra in SMALLER:
        if tuple(out[: len(lead)]) == lead:
            out += [e.format(tmp=tmp) for e in extra]
    return out


def test_the_readme_shows_commands_with_the_projects_python():
    text = (ROOT / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            assert not re.match(r"\s*python3? -m taskarith_core", line), line
            assert not re.match(r"\s*python3? app\.py", line), line
    assert len(readme_commands()) >= 15


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_parses(command, tmp_path):
    try:
        build_parser().parse_args(argv_of(command, tmp_path))
    except SystemExit as exc:
        pytest.fail(f"README command no longer parses (exit {exc.code}): {command}")


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory):
    """The README's example files, made from the shipped zoo."""
    from taskarith_core.io import load_state_dict, save_state_dict
    from taskarith_core.runconfig import RunConfig
    from taskarith_core.zoo import load_zoo

    work = tmp_path_factory.mktemp("readme")
    zoo = load_zoo("full")
    dtype = next(iter(load_state_dict(zoo.finetuned_path("digits")).values())).dtype
    pre = {k: v.to(dtype) for k, v in zoo.load_pretrained().items()}  # the zoo's file dtype
    for name in ("PRE", "BASE"):
        save_state_dict(pre, work / f"{name}.safetensors")
    towers = {"A": "digits", "B": "letters", "C": "shapes", "T": "digits"}
    towers.update({"FT": "digits", "M": "digits"})
    for name, task in towers.items():
        (work / f"{name}.safetensors").write_bytes(zoo.finetuned_path(task).read_bytes())
    for name, task in (("IA", "digits"), ("IB", "letters"), ("IC", "shapes"), ("IT", "digits")):
        argv = ["importance", "--metric", "lp", "--model", str(work / f"{name[1]}.safetensors")]
        argv += ["--task", task, "--samples", "2", "--out", str(work / f"{name}.safetensors")]
        assert main(argv) == 0
    masks = [c for c in readme_commands() if c.startswith(f"{PREFIX} masks ")]
    assert masks, "the README shows how to write MASKS.safetensors"
    cfg = RunConfig(tasks=["digits", "letters"], max_samples=8)
    (work / "run_config.json").write_text(cfg.to_json())
    return work, masks[0]


def test_every_readme_command_runs_on_the_zoo(zoo_files, monkeypatch, capsys):
    work, masks = zoo_files
    monkeypatch.chdir(work)
    assert main(argv_of(masks, work)) == 0
    failed = []
    for command in readme_commands():
        if "my.yaml" in command:
            continue  # real checkpoints: parsed above, not run here
        code = main(argv_of(command, work))
        said = capsys.readouterr()
        if code != 0:
            failed.append(f"{command} -> exit {code}: {said.err.strip()[-300:]}")
    assert failed == []
    assert (work / "out" / "xi" / "xi.csv").is_file()  # the missing out/ folder was created


def test_a_readme_command_runs_verbatim_from_the_project_folder():
    command = next(c for c in readme_commands() if c.split()[3:5] == ["zoo", "info"])
    words = shlex.split(command, comments=True)
    assert words[0] == ".venv/bin/python"
    if not (ROOT / words[0]).exists():  # no .venv in this checkout: the same Python by its path
        words[0] = sys.executable
    done = subprocess.run(words, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert "Sanity checks of the zoo" in done.stdout
