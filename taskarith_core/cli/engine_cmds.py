"""``merge``, ``negate`` and ``masks``: the pure-tensor engine over safetensors files."""

from __future__ import annotations

import argparse
import math

from ..device import pick_device
from ..streaming import stream_masks, stream_merge, stream_negate
from .common import add_device_flag, tqdm_progress, unit_interval, unit_interval_open

__all__ = ["register"]


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pretrained",
        required=True,
        metavar="PRE.safetensors",
        help="theta_pre: the pretrained image tower (or whole CLIP)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="OUT.safetensors",
        help="output file; written to a temp file first, then renamed",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow .pt/.pth/.bin inputs (loaded with torch.load weights_only=True)",
    )
    add_device_flag(parser)


def _params(args: argparse.Namespace, names: list[str]) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _run_merge(args: argparse.Namespace) -> int:
    params = _params(args, ["p", "lam", "rate", "seed"])
    if args.k is not None:
        params["k"] = int(args.k) if args.method == "consensus" and args.k.is_integer() else args.k
    if args.tall_lambda is not None:
        params["tall_lambda"] = args.tall_lambda
    if args.method == "sta":
        params.pop("lam", None)
    stream_merge(
        args.method,
        args.pretrained,
        args.finetuned,
        args.out,
        importances=args.importance or (),
        masks=args.masks or (),
        params=params,
        device=pick_device(args.device),
        trust_pickle=args.trust_pickle,
        progress=tqdm_progress(f"merge ({args.method})"),
    )
    print(f"wrote {args.out}  ({args.method}, {len(args.finetuned)} tasks, {params})")
    return 0


def _run_negate(args: argparse.Namespace) -> int:
    params = _params(args, ["p"] if args.method == "sta" else ["lam"])
    stream_negate(
        args.method,
        args.pretrained,
        args.finetuned,
        args.out,
        base=args.base,
        importance=args.importance,
        params=params,
        device=pick_device(args.device),
        trust_pickle=args.trust_pickle,
        progress=tqdm_progress(f"negate ({args.method})"),
    )
    print(f"wrote {args.out}  ({args.method}, {params})")
    return 0


def _run_masks(args: argparse.Namespace) -> int:
    rates = stream_masks(
        args.pretrained,
        args.finetuned,
        args.importance,
        args.out,
        p=args.p,
        rates_csv=args.rates,
        device=pick_device(args.device),
        trust_pickle=args.trust_pickle,
        progress=tqdm_progress("masks"),
    )
    summary = rates.groupby("task").apply(lambda d: d["selected"].sum() / d["numel"].sum())
    print(f"wrote {args.out}  (p={args.p})")
    for task, rate in summary.items():
        print(f"  {task}: {100 * rate:.2f}% of entries kept")
    return 0


def _add_merge(subparsers) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="fuse N fine-tuned checkpoints into one",
        description="theta = merge(theta_pre, theta_1..theta_N). Methods: sta (STA Eq. 13-19), "
        "task_arithmetic, ties, dare, consensus, masked_arithmetic.",
    )
    parser.add_argument(
        "--method",
        required=True,
        metavar="NAME",
        help="sta | task_arithmetic | ties | dare | consensus | masked_arithmetic",
    )
    _common(parser)
    parser.add_argument(
        "--finetuned",
        nargs="+",
        required=True,
        metavar="FT.safetensors",
        help="theta_t for each task t (at least 2)",
    )
    parser.add_argument(
        "--importance",
        nargs="+",
        metavar="I.safetensors",
        help="sta: importance I_t of each task, in --finetuned order (Eq. 12, 21, 22)",
    )
    parser.add_argument(
        "--masks",
        nargs="+",
        metavar="M.safetensors",
        help="masked_arithmetic: one mask per task, or one file written by `masks`",
    )
    parser.add_argument(
        "--p",
        type=unit_interval,
        help="sta: quantile p in [0, 1] of the cross-task threshold (Eq. 15-16; paper 0.7)",
    )
    parser.add_argument(
        "--lam",
        type=_finite,
        help="scaling coefficient lambda (task_arithmetic 0.4, ties 1.0, dare 0.4, "
        "consensus 0.4, masked_arithmetic 1.0); sta has none",
    )
    parser.add_argument(
        "--k",
        type=_finite,
        help="ties: fraction of each task vector kept by magnitude, in (0, 1] "
        "(0.2 keeps 20%%); consensus: minimum number of agreeing TALL masks (2)",
    )
    parser.add_argument(
        "--rate",
        type=unit_interval_open,
        help="dare: drop rate in [0, 1); kept entries are rescaled by 1/(1-rate)",
    )
    parser.add_argument("--seed", type=int, help="dare: seed of the random drop masks (0)")
    parser.add_argument(
        "--tall-lambda",
        type=_finite,
        dest="tall_lambda",
        help="consensus: lambda_t of the TALL masks |tau_t| >= lambda_t |tau_MTL - tau_t| (0.4)",
    )
    parser.set_defaults(func=_run_merge)


def _add_negate(subparsers) -> None:
    parser = subparsers.add_parser(
        "negate",
        help="forget one task: theta = base - (masked) tau_t",
        description="Task forgetting. sta: Eq. 20, mask from the task's own per-tensor p-quantile "
        "of normalised importance, no coefficient; task_arithmetic: base - lambda * tau.",
    )
    parser.add_argument("--method", required=True, metavar="NAME", help="sta | task_arithmetic")
    _common(parser)
    parser.add_argument(
        "--finetuned", required=True, metavar="FT.safetensors", help="theta_t of the task to forget"
    )
    parser.add_argument("--importance", metavar="I.safetensors", help="sta: importance I_t")
    parser.add_argument(
        "--base",
        metavar="BASE.safetensors",
        help="theta_k, the model to forget from (default: --pretrained)",
    )
    parser.add_argument(
        "--p", type=unit_interval, help="sta: per-tensor quantile p in [0, 1] (0.9)"
    )
    parser.add_argument("--lam", type=_finite, help="task_arithmetic: coefficient lambda (1.0)")
    parser.set_defaults(func=_run_negate)


def _add_masks(subparsers) -> None:
    parser = subparsers.add_parser(
        "masks",
        help="STA crossmasking masks and per-tensor selection rates",
        description="M_t = 1(I'_t > T), T the element-wise p-quantile across tasks of the "
        "per-tensor min-max normalised importances (STA Eq. 13-17).",
    )
    _common(parser)
    parser.add_argument(
        "--finetuned",
        nargs="+",
        required=True,
        metavar="FT.safetensors",
        help="theta_t for each task (names come from the file names)",
    )
    parser.add_argument(
        "--importance",
        nargs="+",
        required=True,
        metavar="I.safetensors",
        help="importance I_t of each task, in --finetuned order",
    )
    parser.add_argument(
        "--p", type=unit_interval, required=True, help="quantile p in [0, 1] (Eq. 15-16)"
    )
    parser.add_argument(
        "--rates", metavar="RATES.csv", help="also write per-(task, tensor) selection rates as CSV"
    )
    parser.set_defaults(func=_run_masks)


def register(subparsers) -> None:
    _add_merge(subparsers)
    _add_negate(subparsers)
    _add_masks(subparsers)
