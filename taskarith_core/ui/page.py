"""The whole page: the shared model-source picker above one tab per activity.

``build_page`` only lays out and wires; every tab's work lives in its own module. Task lists are
filled when the page loads (and when the source changes), so the server starts before the engine
and the zoo have been imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import InputError
from ..runconfig import RunConfig
from .common import DEFAULT_SOURCE, config_from_source, explorer, user_errors
from .forget_tab import build_forget_tab, forget_controls_from_config
from .guard import guard_events
from .masks_tab import build_masks_tab, update_iou, update_masks
from .merge_tab import build_merge_tab, controls_from_config
from .upload import config_source, on_this_server, read_uploaded_config

__all__ = [
    "build_page",
    "config_updates",
    "describe_source",
    "initial_tasks",
    "load_source",
    "run_status",
    "source_updates",
    "zoo_paradigm_labels",
]

#: the shipped zoo (``taskarith_core.zoo.ZOO_ROOT``, not imported: it pulls in torch)
_DEFAULT_ZOO = Path(__file__).resolve().parents[2] / "assets" / "zoo"

PARADIGM_LABELS = [
    ("full fine-tuning", "full"),
    ("attention-only", "attention"),
    ("TaLoS sparse", "talos"),
    ("linearised fine-tuning", "linearized"),
    ("L-LoRA (linearised LoRA)", "l-lora"),
    ("LoTA (lottery-ticket sparse)", "lota"),
]


def zoo_paradigm_labels(source: dict[str, Any]) -> list[tuple[str, str]]:
    """The picker's paradigms: those the zoo folder holds (its tasks.json), read without torch;
    all of them when the folder cannot be read (opening it then says what is wrong)."""
    root = Path(source["zoo_root"]) if source.get("zoo_root") else _DEFAULT_ZOO
    try:
        have = json.loads((root / "tasks.json").read_text())["paradigms"]
    except (OSError, ValueError, KeyError, TypeError):
        return list(PARADIGM_LABELS)
    labels = [(label, value) for label, value in PARADIGM_LABELS if value in have]
    return labels or list(PARADIGM_LABELS)


#: Enter in a number box (a slider's included) commits the value like leaving the box does, so a
#: typed p redraws the masks at once (their sliders redraw on release, not at every drag step)
ENTER_COMMITS = (
    "<script>document.addEventListener('keydown', (event) => {"
    " if (event.key === 'Enter' && event.target.matches('input[type=number]'))"
    " event.target.blur(); });</script>"
)
INTRO = (
    "## Merge explorer\nMerge CLIP task vectors with STA, TaLoS masks or the papers' baselines "
    "(task arithmetic, averaging, TIES, DARE, Consensus, PCB, Breadcrumbs, TSV-M, Iso-C/CTS, "
    "AdaMerging), each run beside its references with 95% intervals; see which parameters each "
    "task keeps; forget a task; compare paradigms' disentanglement. Every run can be downloaded "
    "as a run config and reproduced with `python -m taskarith_core run --config`."
)


def load_source(
    kind: str, paradigm: str, manifest: str | None, base: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[str], str]:
    """Open the picked source; returns (source settings, task names, status line)."""
    source = dict(base or DEFAULT_SOURCE)
    source.update(source=kind, paradigm=paradigm or "full")
    if kind == "manifest":
        if not manifest or not str(manifest).strip():
            raise InputError("manifest is picked but no path is given; type the manifest's path")
        source["manifest"] = str(manifest).strip()
    cfg = config_from_source(source)
    service = explorer(cfg)
    return source, service.tasks, describe_source(cfg, service)


def describe_source(cfg: RunConfig, service: Any) -> str:
    control = service.source.control_task or "none"
    return (
        f"Loaded **{service.source.name}**: {len(service.tasks)} tasks "
        f"({', '.join(service.tasks)}); control set: {control}."
    )


def initial_tasks(source: dict[str, Any]) -> list[str]:
    """Task names for the first page: read from the zoo's tasks.json when possible, so the page
    is served before torch and open_clip are imported; otherwise open the source."""
    if source.get("source", "zoo") == "zoo":
        root = Path(source["zoo_root"]) if source.get("zoo_root") else _DEFAULT_ZOO
        try:
            return list(json.loads((root / "tasks.json").read_text())["tasks"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not a built zoo folder (or a test source): open it below
    try:
        return explorer(config_from_source(source)).tasks
    except InputError:
        return []  # the page shows the reason when it loads (``on_load``)


def _source_row(start: dict[str, Any]) -> list[Any]:
    """The shared model-source picker: kind, zoo paradigm, manifest path, Load button."""
    with gr.Row(equal_height=True):
        kind = gr.Radio(
            [("embedded zoo", "zoo"), ("manifest file", "manifest")],
            value=start["source"],
            label="Model source",
            scale=1,
        )
        paradigm = gr.Dropdown(
            zoo_paradigm_labels(start), value=start["paradigm"], label="Zoo paradigm", scale=1
        )
        manifest = gr.Textbox(
            start.get("manifest") or "", label="Manifest path (YAML/JSON)", scale=2
        )
        load = gr.Button("Load source", scale=0)
    return [kind, paradigm, manifest, load]


def source_updates(source: dict, tasks: list[str], text: str, multi: int, single: list[int]):
    """Outputs of a source change: state, status, then every task picker's new choices
    (checkbox groups tick all; single pickers take the task at their index)."""
    updates = [gr.update(choices=tasks, value=tasks) for _ in range(multi)]
    updates += [
        gr.update(choices=tasks, value=tasks[min(i, len(tasks) - 1)] if tasks else None)
        for i in single
    ]
    return [source, text, *updates]


def run_status(tab: str) -> gr.Markdown:
    """The line a tab's events show progress on (and Gradio's badge when one fails), so a
    mistake never covers that tab's chart, tables or controls."""
    return gr.Markdown("", elem_id=f"{tab}-run-status", elem_classes=["run-status"], min_height=40)


def build_page(
    default_source: dict[str, Any] | None = None, task_names: list[str] | None = None
) -> gr.Blocks:
    """The Blocks app; ``default_source`` holds RunConfig source keys (zoo paradigm / manifest)."""
    start = dict(DEFAULT_SOURCE)
    start.update(default_source or {})
    names = initial_tasks(start) if task_names is None else list(task_names)
    # Gradio copies every returned file into its cache; drop copies older than a day, hourly
    cache_policy = (3600, 86400)
    with gr.Blocks(
        title="Merge explorer",
        analytics_enabled=False,
        delete_cache=cache_policy,
        head=ENTER_COMMITS,
    ) as demo:
        gr.Markdown(INTRO)
        source_state = gr.State(start)
        kind, paradigm, manifest, load = _source_row(start)
        status = gr.Markdown(elem_id="source-status")
        lines: dict[Any, gr.Markdown] = {}
        with gr.Tabs():
            with gr.Tab("Merge", id="merge") as tab:
                lines[tab] = run_status("merge")
                merge = build_merge_tab(source_state, names)
            with gr.Tab("Masks", id="masks") as masks_tab:
                lines[masks_tab] = run_status("masks")
                masks = build_masks_tab(source_state, names)
            with gr.Tab("Forget", id="forget") as tab:
                lines[tab] = run_status("forget")
                forget = build_forget_tab(source_state, names)
            extra = _optional_tabs(source_state, names, lines)
        multi = [merge["tasks"], masks["tasks"], *extra.get("multi", [])]
        single = [(forget["target"], 0), *extra.get("single", [])]

        @user_errors
        def on_load(kind_value, paradigm_value, manifest_value, base):
            source, tasks, text = load_source(kind_value, paradigm_value, manifest_value, base)
            return source_updates(source, tasks, text, len(multi), [i for _, i in single])

        inputs = [kind, paradigm, manifest, source_state]
        outputs = [source_state, status, *multi, *(component for component, _ in single)]
        load.click(on_load, inputs, outputs, api_name="load")
        paradigm.input(on_load, inputs, outputs, api_visibility="private")
        demo.load(on_load, inputs, outputs, api_visibility="private")
        masks_tab.select(
            update_masks, masks["inputs"], masks["outputs"], api_visibility="private"
        ).then(update_iou, masks["inputs"], masks["iou"], api_visibility="private")
        pickers = {"multi": multi, "single": single, "row": [kind, paradigm, manifest]}
        for tab_parts, from_config in (
            (merge, lambda cfg: controls_from_config(cfg)[1:]),
            (forget, lambda cfg: forget_controls_from_config(cfg)[1:]),
        ):
            _wire_upload(tab_parts, from_config, source_state, status, pickers)
        guard_events(demo, lines, status, [*multi, *(picker for picker, _ in single)])
    return demo


def config_updates(
    cfg: RunConfig, values: list[Any], controls: list[Any], state: Any, status: Any, pickers: dict
) -> dict[Any, Any]:
    """Every change an uploaded config makes, or an InputError before any: the source row and
    state, every task picker (the config's source and its tasks), then the tab's controls."""
    source, tasks, service = config_source(cfg)
    kind, paradigm, manifest = pickers["row"]
    updates: dict[Any, Any] = {
        state: source,
        status: describe_source(cfg, service),
        kind: cfg.source,
        paradigm: cfg.paradigm,
        manifest: cfg.manifest or "",
    }
    for picker in pickers["multi"]:
        updates[picker] = gr.update(choices=tasks, value=tasks)
    for picker, index in pickers["single"]:
        updates[picker] = gr.update(choices=tasks, value=tasks[min(index, len(tasks) - 1)])
    for control, value in zip(controls, values):
        if control in updates:  # a task picker: the source's tasks, the config's choice
            updates[control] = gr.update(choices=tasks, value=value)
        else:
            updates[control] = value
    return updates


def _wire_upload(parts: dict, from_config, state: Any, status: Any, pickers: dict) -> None:
    """A tab's "Load run config" button: read, check, then change everything or nothing."""
    controls = list(parts["controls"])
    outputs = list(
        dict.fromkeys(
            [state, status, *pickers["row"], *pickers["multi"]]
            + [picker for picker, _ in pickers["single"]]
            + controls
        )
    )

    @user_errors
    def on_upload(path, current):
        cfg = on_this_server(read_uploaded_config(path), current)
        return config_updates(cfg, from_config(cfg), controls, state, status, pickers)

    parts["upload"].upload(on_upload, [parts["upload"], state], outputs, api_visibility="private")


def _optional_tabs(source_state: gr.State, names: list[str], lines: dict) -> dict[str, list]:
    """Disentanglement and Analyses tabs, laid out by their own modules."""
    from .analyses_tab import build_analyses_tab
    from .xi_tab import build_xi_tab

    with gr.Tab("Disentanglement", id="xi") as tab:
        lines[tab] = run_status("xi")
        xi = build_xi_tab(source_state, names)
    with gr.Tab("Analyses", id="analyses") as tab:
        lines[tab] = run_status("analyses")
        analyses = build_analyses_tab(source_state, names)
    return {
        "multi": analyses.get("multi", []),
        "single": [*xi.get("single", []), *analyses.get("single", [])],
    }
