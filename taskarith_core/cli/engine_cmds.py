"""``merge``, ``negate`` and ``masks``: the pure-tensor engine over safetensors files."""

from __future__ import annotations

import argparse

from ..device import pick_device
from ..fusion import MERGE_METHODS, NEGATION_METHODS
from ..streaming import stream_masks, stream_merge, stream_negate
from .common import add_device_flag, tqdm_progress, unit_interval
from .method_flags import add_method_flags, method_help, method_params

__all__ = ["register"]


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


def _run_merge(args: argparse.Namespace) -> int:
    params = method_params(args, MERGE_METHODS, args.method)
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
    params = method_params(args, NEGATION_METHODS, args.method)
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
        description="theta = merge(theta_pre, theta_1..theta_N). Methods: "
        + method_help(MERGE_METHODS).replace("%", "%%"),
    )
    parser.add_argument("--method", required=True, metavar="NAME", help=" | ".join(MERGE_METHODS))
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
        help="methods that read importances (sta): importance I_t of each task, in --finetuned "
        "order",
    )
    parser.add_argument(
        "--masks",
        nargs="+",
        metavar="M.safetensors",
        help="methods that read masks (masked_arithmetic): one mask per task, or one file "
        "written by `masks`",
    )
    add_method_flags(parser, MERGE_METHODS)
    parser.set_defaults(func=_run_merge)


def _add_negate(subparsers) -> None:
    parser = subparsers.add_parser(
        "negate",
        help="forget one task: theta = base - (masked) tau_t",
        description="Task forgetting. Methods: " + method_help(NEGATION_METHODS).replace("%", "%%"),
    )
    parser.add_argument(
        "--method", required=True, metavar="NAME", help=" | ".join(NEGATION_METHODS)
    )
    _common(parser)
    parser.add_argument(
        "--finetuned", required=True, metavar="FT.safetensors", help="theta_t of the task to forget"
    )
    parser.add_argument(
        "--importance", metavar="I.safetensors", help="sta: importance I_t of the task"
    )
    parser.add_argument(
        "--base",
        metavar="BASE.safetensors",
        help="theta_k, the model to forget from (default: --pretrained)",
    )
    add_method_flags(parser, NEGATION_METHODS)
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
