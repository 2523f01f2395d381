"""The set-up files: every requirement pinned to the version this environment runs, and the
browser installed without Debian's recommended extras (printers, avahi, perl)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[tuple[str, str]]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pins = []
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, sep, pinned = line.partition("==")
            assert sep and pinned, f"{line}: not pinned with =="
            pins.append((name, pinned))
    return pins


def test_every_requirement_is_pinned_to_the_installed_version():
    pins = _requirements()
    assert {"numpy", "pyyaml", "scikit-learn", "matplotlib", "tqdm", "ruff", "hypothesis"} <= {
        name.lower() for name, _ in pins
    }
    wrong = []
    for name, pinned in pins:
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong.append(f"{name}=={pinned} (installed: {installed})")
    assert wrong == []


def test_chromium_comes_without_recommended_packages():
    recipe = (ROOT / "Makefile").read_text()
    install = next(line for line in recipe.splitlines() if "apt-get install" in line)
    assert "--no-install-recommends" in install and "chromium" in install
