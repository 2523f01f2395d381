"""Merge explorer: ``python app.py`` serves the page on http://127.0.0.1:7860 (embedded zoo).

Layout lives in ``taskarith_core.ui``; this file only reads the flags, switches off everything
that would reach the network, and starts the server. The engine is imported in the background
after the page is up, so the first page load is quick.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import argparse  # noqa: E402
import threading  # noqa: E402

#: the largest upload the server accepts (a run config; ``ui.upload.MAX_CONFIG_BYTES``)
MAX_UPLOAD = "1mb"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the merge explorer page.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--paradigm", default="full", choices=["full", "attention", "talos"], help="zoo paradigm"
    )
    parser.add_argument("--zoo-root", default=None, help="another zoo folder (default assets/zoo)")
    parser.add_argument("--manifest", default=None, help="open a manifest instead of the zoo")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads per computation (default 1: fastest when users or other jobs share the "
        "cores; raise it on an otherwise idle many-core machine)",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the sweep and xi actions on a Ray cluster: auto, HOST:PORT, or local (start "
        "a Ray instance on this machine)",
    )
    return parser.parse_args(argv)


def connect_ray(address: str, device: str) -> None:
    """Join (or start) the Ray cluster before the page is served; a bad address, a cluster
    without the project or without GPUs for a CUDA page is one sentence and exit 2."""
    import sys

    from taskarith_core.errors import InputError

    try:
        from taskarith_core.device import pick_device
        from taskarith_core.executor import parse_executor, use_for_page

        spec = parse_executor("ray" if address == "local" else f"ray:{address}")
        use_for_page(spec, gpu=pick_device(device).type == "cuda")
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None


def warm_up(source: dict) -> None:
    """Import the engine, open the default source and compute what the first Run needs (reference
    accuracies, lp importances, then the default run's references) while the first visitor reads
    the page."""
    from taskarith_core.ui.common import config_from_source, explorer
    from taskarith_core.ui.merge_tab import PAGE_EVAL_SAMPLES, warm_references

    try:
        explorer(config_from_source(source)).warm(PAGE_EVAL_SAMPLES or None)
        warm_references(source)  # after what the first Run needs: the references come second
    except Exception:  # noqa: BLE001 - the page reports the same problem to the user on load
        return


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # torch reads this when it is first imported (in the warm-up thread, after the page is up)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, args.threads)))
    if args.ray:
        connect_ray(args.ray, args.device)
    from taskarith_core.ui.page import build_page

    source = {
        "source": "manifest" if args.manifest else "zoo",
        "paradigm": args.paradigm,
        "zoo_root": args.zoo_root,
        "manifest": args.manifest,
        "device": args.device,
    }
    demo = build_page(source)
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=False,
        # every message the page sends is one sentence (callbacks and controls are checked in
        # taskarith_core.ui.guard), so Gradio may pass each one on to the user
        show_error=True,
        # the page uploads nothing but run configs (JSON text of at most 1 MB)
        max_file_size=MAX_UPLOAD,
        prevent_thread_lock=True,
    )
    # only now: importing torch and open_clip in parallel would slow the server's start-up
    threading.Thread(target=warm_up, args=(source,), daemon=True).start()
    demo.block_thread()


if __name__ == "__main__":
    main()
