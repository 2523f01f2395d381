"""Loading a run config on the page: read only what a run config can be, open the source it
names with all its tasks, and apply it whole or not at all.

A config written for another source (a manifest while the zoo is loaded) switches the page to
that source, task pickers included; one naming a task the source lacks is refused before any
control changes, so the page never shows a half-applied config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import InputError, quote
from ..runconfig import RunConfig
from .common import DEFAULT_SOURCE, explorer

__all__ = ["MAX_CONFIG_BYTES", "config_source", "on_this_server", "read_uploaded_config"]

#: a run config the page writes is about 600 bytes; anything past 1 MB is not one
MAX_CONFIG_BYTES = 1_000_000
_USE_OURS = "upload a run_config.json the page wrote"


def read_uploaded_config(path: Any) -> RunConfig:
    """An uploaded run config: UTF-8 JSON text of at most 1 MB, validated setting by setting."""
    if not path:
        raise InputError(f"no file was uploaded; {_USE_OURS}")
    file = Path(str(path))
    try:
        size = file.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise InputError(
                f"the uploaded file has {size / 1e6:.1f} MB but a run config is a JSON text of "
                f"at most 1 MB; {_USE_OURS}"
            )
        data = file.read_bytes()[: MAX_CONFIG_BYTES + 1]
    except OSError:
        raise InputError(f"the uploaded file could not be read; {_USE_OURS}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        raise InputError(
            f"the uploaded file is not text (a picture or other binary file?) but a run config "
            f"is a JSON text; {_USE_OURS}"
        )
    return RunConfig.from_json(text)


def on_this_server(cfg: RunConfig, current: dict[str, Any] | None) -> RunConfig:
    """The config on the device this page computes on: a config written where a GPU was (or
    naming another GPU) must not be refused here, nor pick the server's hardware; the numbers
    do not depend on it."""
    device = (current or {}).get("device") or DEFAULT_SOURCE["device"]
    return dataclasses.replace(cfg, device=device)


def config_source(cfg: RunConfig) -> tuple[dict[str, Any], list[str], Any]:
    """(source settings, its tasks, its service) of an uploaded config, after checking that the
    source has every task the config names (else the whole config is refused)."""
    settings = {name: getattr(cfg, name) for name in DEFAULT_SOURCE}
    service = explorer(cfg)
    tasks = list(service.tasks)
    named = [*cfg.tasks, *([cfg.target] if cfg.target else [])]
    missing = [task for task in named if task not in tasks]
    if missing:
        raise InputError(
            f"this run config names task {quote(missing[0])}, which {service.source.name} does "
            f"not have (it has {', '.join(tasks)}); nothing was changed: load the source the "
            "config was written for, or edit its tasks"
        )
    return settings, tasks, service
