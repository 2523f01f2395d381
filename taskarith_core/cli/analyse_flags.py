"""The flags of each ``analyse`` subcommand, and the checks that run before anything is computed.

Every analysis is offered only the flags it reads (``xi`` has ``--samples``, not
``--max-samples``; ``cosine`` has no ``--split``), every number is range-checked while the command
line is parsed (limits from :mod:`taskarith_core.limits`), and :func:`check_analysis` refuses the
combinations that would be ignored or fail late (``--seed`` without masks that draw samples, a
sweep value outside its parameter's range), so a mistake costs no computing.
"""

from __future__ import annotations

import argparse
import math

from ..errors import InputError, quote
from ..limits import (
    COEFFICIENT,
    EVAL_IMAGES,
    LIST_VALUES,
    SAMPLES,
    SEED,
    SUBSETS,
    THREADS,
    XI_POINTS,
)
from .common import add_device_flag, as_flag, float_flag, float_list_flag, int_flag, int_list_flag

__all__ = ["add_flags", "check_analysis", "methods_from_text", "parse_methods"]

METRICS = ("lp", "amp", "lp_amp", "fisher", "magnitude", "random")
#: analyses that evaluate accuracy on a split / over a capped number of images
_SPLIT = {"xi", "kernel", "localisation", "sweep", "negation-sweep", "scaling", "stability"}
_MAX_SAMPLES = {"kernel", "localisation", "sweep", "negation-sweep", "scaling", "stability"}
#: analyses whose --ns / --seed only matter for masks that are computed from samples
_MASKED = {"xi", "cosine", "iou", "rates", "localisation"}
_NS = _MASKED | {"sweep", "negation-sweep", "scaling"}


def _source_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for CSV + HTML")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--manifest", metavar="M.yaml", help="real checkpoints named by a manifest")
    where.add_argument("--zoo-root", metavar="DIR", help="another zoo folder (default: shipped)")
    from ..zoo import PARADIGMS

    parser.add_argument(
        "--paradigm",
        default="full",
        choices=PARADIGMS,
        help="zoo fine-tuning paradigm (default full)",
    )
    parser.add_argument("--tasks", metavar="A,B,...", help="comma-separated tasks (default all)")
    parser.add_argument(
        "--threads",
        type=int_flag("threads", 1, THREADS),
        default=1,
        help="torch CPU threads (default 1)",
    )
    parser.add_argument(
        "--trust-pickle", action="store_true", help="allow .pt/.bin checkpoints you trust"
    )
    add_device_flag(parser)


def _sample_flags(name: str, parser: argparse.ArgumentParser) -> None:
    if name in _SPLIT:
        parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    if name in _MAX_SAMPLES:
        parser.add_argument(
            "--max-samples",
            type=int_flag("max-samples", 1, EVAL_IMAGES),
            metavar="N",
            help="evaluation images per task (default: the whole split)",
        )
    masked = " (with --masks sta or fisher)" if name in _MASKED else ""
    parser.add_argument(
        "--seed",
        type=int_flag("seed", 0, SEED),
        default=None,
        help=f"seed of the sample draw{masked} (default 0)",
    )
    if name in _NS:
        parser.add_argument(
            "--ns",
            type=int_flag("ns", 1, SAMPLES),
            default=None,
            help=f"samples for lp / fisher importance{masked} (default 32)",
        )


def _mask_flags(parser: argparse.ArgumentParser, default: str) -> None:
    choices = (
        ("none", "sta", "talos", "fisher") if default == "none" else ("sta", "talos", "fisher")
    )
    parser.add_argument(
        "--masks",
        default=default,
        choices=choices,
        help="STA crossmasking at --p, the TaLoS masks, or TaLoS-style post-hoc bottom-k Fisher "
        "masks at --sparsity",
    )
    parser.add_argument(
        "--sparsity",
        type=float_flag("sparsity", 0.0, 1.0, high_open=True),
        default=0.9,
        help="fraction of entries the bottom-k Fisher masks freeze, in [0, 1) (0.9)",
    )
    parser.add_argument("--metric", default="lp", choices=METRICS, help="STA importance metric")
    parser.add_argument(
        "--p", type=float_flag("p", 0.0, 1.0), default=0.7, help="STA quantile p (default 0.7)"
    )


def _xi_flags(parser: argparse.ArgumentParser) -> None:
    coefficient = float_flag("alpha", -COEFFICIENT, COEFFICIENT)
    parser.add_argument(
        "--preset",
        default="ortiz",
        choices=("ortiz", "talos"),
        help="ortiz: 15x15 on [-2,2]^2; talos: 20x20 on [-3,3]^2",
    )
    parser.add_argument(
        "--points",
        type=int_flag("points", 1, XI_POINTS),
        help=f"grid points per axis, at most {XI_POINTS} (overrides the preset)",
    )
    parser.add_argument("--alpha-range", type=coefficient, nargs=2, metavar=("LO", "HI"))
    parser.add_argument("--distance", default="prediction", choices=("prediction", "kl"))
    parser.add_argument(
        "--samples",
        type=int_flag("samples", 1, SAMPLES),
        default=2048,
        help="test images per task the error is measured on (default 2048 as the papers, or the "
        "whole split when it is smaller)",
    )
    parser.add_argument(
        "--on",
        default="head",
        choices=("head", "representation"),
        help="compare the task heads' outputs, or the image tower's own output without a head "
        "(the attention-only paper's Eq. 2; needs --distance kl)",
    )
    parser.add_argument(
        "--threshold",
        type=float_flag("threshold", 0.0, math.inf),
        default=0.1,
        help="xi level for the area",
    )
    parser.add_argument(
        "--workers",
        type=int_flag("workers", 1, THREADS),
        default=1,
        help="grid rows in parallel threads (e.g. 2 with --threads 1 on a 2-core CPU)",
    )
    parser.add_argument(
        "--finetuned",
        metavar="A,B",
        help="two fine-tuned checkpoints to use instead of the "
        "source's (image tower or whole CLIP, .safetensors)",
    )
    _mask_flags(parser, "none")


def _sweep_flags(name: str, parser: argparse.ArgumentParser) -> None:
    from ..analyses.methods import ALIASES, METHODS

    parser.add_argument("--method", required=True, choices=(*METHODS, *ALIASES),
                        metavar="METHOD", help=", ".join(METHODS))  # fmt: skip
    parser.add_argument(
        "--values",
        type=float_list_flag("values", -COEFFICIENT, COEFFICIENT, LIST_VALUES),
        help=f"comma-separated, at most {LIST_VALUES} (default: the method's grid)",
    )
    if name == "sweep":
        parser.add_argument("--param", help="parameter to sweep (default: the tuned one)")
        parser.add_argument("--show", default="normalised", choices=("normalised", "accuracy"))


def add_flags(name: str, parser: argparse.ArgumentParser) -> None:
    """Every flag analysis ``name`` reads, and no other."""
    _source_flags(parser)
    _sample_flags(name, parser)
    if name == "xi":
        _xi_flags(parser)
    elif name == "kernel":
        parser.add_argument(
            "--paradigms",
            metavar="full,attention,talos",
            help="zoo paradigms to overlay (default: --paradigm only)",
        )
    elif name in ("cosine", "localisation"):
        _mask_flags(parser, "none")
        if name == "cosine":
            parser.add_argument("--by", default="kind", choices=("whole", "block", "kind"))
        else:
            parser.add_argument(
                "--coefficient",
                type=float_flag("coefficient", -COEFFICIENT, COEFFICIENT),
                default=1.0,
                help=f"lambda of theta_pre + lambda tau_i, in [-{COEFFICIENT:g}, {COEFFICIENT:g}]",
            )
            parser.add_argument(
                "--normalise",
                default="zeroshot",
                choices=("zeroshot", "finetuned", "none"),
                help="divide by the pre-trained (zero-shot) accuracy as TaLoS Fig. 3 (default), "
                "by the fine-tuned accuracy, or not at all",
            )
    elif name in ("iou", "rates"):
        _mask_flags(parser, "sta")
        if name == "iou":
            parser.add_argument("--by", default="whole", choices=("whole", "block", "kind"))
        else:
            parser.add_argument("--level", default="block", choices=("block", "tensor"))
    elif name in ("sweep", "negation-sweep"):
        _sweep_flags(name, parser)
    elif name == "scaling":
        parser.add_argument("--methods", required=True, type=parse_methods,
                            metavar="ta=0.3,sta-lp=0.7")  # fmt: skip
        parser.add_argument(
            "--counts",
            type=int_list_flag("counts", 2, LIST_VALUES, LIST_VALUES),
            help="task counts N (default 2..all)",
        )
        parser.add_argument("--subsets", type=int_flag("subsets", 1, SUBSETS), default=5,
                            help="subsets per N (seeded)")  # fmt: skip
    elif name == "stability":
        parser.add_argument("--metric", default="lp", choices=METRICS)
        parser.add_argument(
            "--ns-values",
            type=int_list_flag("ns-values", 1, SAMPLES, LIST_VALUES),
            default=[8, 16, 32, 64],
        )
        parser.add_argument("--p", type=float_flag("p", 0.0, 1.0), default=0.7)


def methods_from_text(text: str) -> dict[str, float]:
    """``ta=0.3,sta-lp=0.7`` -> {method: value}; each name known, each value a finite number."""
    from ..analyses.methods import METHODS
    from ..limits import parse_float

    methods: dict[str, float] = {}
    for item in [i for i in text.split(",") if i.strip()][: LIST_VALUES + 1]:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise InputError(f"{quote(item)}: write NAME=VALUE, e.g. ta=0.3,sta-lp=0.7")
        if name not in METHODS:
            raise InputError(f"{quote(name)} is not a method; use {', '.join(METHODS)}")
        methods[name] = parse_float(name, value, -COEFFICIENT, COEFFICIENT)
    if not methods or len(methods) > LIST_VALUES:
        raise InputError(f"give 1 to {LIST_VALUES} items NAME=VALUE, e.g. ta=0.3")
    return methods


#: argparse type of ``analyse scaling --methods``
parse_methods = as_flag(methods_from_text)


def check_analysis(args: argparse.Namespace) -> None:
    """Refuse flags that would be ignored and values that would fail late; fill in defaults."""
    masks = getattr(args, "masks", None)
    if args.analysis in _MASKED and masks not in ("sta", "fisher"):
        given = [f for f in ("ns", "seed") if getattr(args, f, None) is not None]
        if args.analysis == "xi":
            given = [f for f in given if f != "seed"]  # xi also draws its images with the seed
        if given:
            flags = " and ".join(f"--{f}" for f in given)
            verb = "change" if len(given) > 1 else "changes"
            raise InputError(
                f"{flags} only {verb} masks drawn from samples; with --masks "
                f"{masks or 'none'} they have no effect: drop them, or use --masks sta or fisher"
            )
    if getattr(args, "seed", None) is None:
        args.seed = 0
    if hasattr(args, "ns") and args.ns is None:
        args.ns = 32
    if args.analysis in ("sweep", "negation-sweep"):
        _check_sweep(args)
    if args.analysis == "xi" and args.alpha_range and args.alpha_range[0] >= args.alpha_range[1]:
        raise InputError("--alpha-range LO HI needs LO < HI, e.g. --alpha-range -2 2")


def _check_sweep(args: argparse.Namespace) -> None:
    """The swept parameter exists and every value lies in its range, before any merge runs."""
    from ..analyses.methods import method_spec
    from ..fusion import MERGE_METHODS, NEGATION_METHODS

    spec = method_spec(args.method)
    if args.analysis == "negation-sweep":
        if spec.negation is None:
            raise InputError(
                f"{args.method} has no negation; use ta, talos-mask or an sta-* method"
            )
        registry, param = NEGATION_METHODS[spec.negation], spec.param
    else:
        registry, param = MERGE_METHODS[spec.registry], args.param or spec.param
    names = [p.name for p in registry.params] + (["sparsity"] if spec.masks == "fisher" else [])
    if param not in names:
        raise InputError(
            f"--param {quote(param)}: {args.method} has no such parameter; use one of "
            f"{', '.join(names)}"
        )
    for value in args.values or ():
        if param == "sparsity" and spec.masks == "fisher":
            if not 0.0 <= value < 1.0:
                raise InputError(f"--values: sparsity={value:g} is outside [0, 1)")
        else:
            registry.param(param).check(value, owner="--values:")
