"""The explorer's service: what the page and ``run --config`` compute, without any Gradio.

``explorer.Explorer`` caches one source's weights, importances, masks, merges and accuracies;
``sources`` opens the source a run config names and shares one Explorer per source; ``results``
turns a result into the tables and figures both show; ``predictions`` labels test images for
the galleries; ``cache`` is the thread-safe memo they share. The page (``taskarith_core.ui``)
only lays out controls and calls these.
"""

__all__ = ["cache", "explorer", "predictions", "results", "sources"]
