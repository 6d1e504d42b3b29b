"""``edge-sam train`` (SAM-style finetuning) and ``edge-sam pretrain`` (SAMI).

Both run as one process, or under ``torchrun --nproc_per_node N -m edge_sam.apps.cli ...``
for DDP (gloo on CPU, nccl on CUDA); only rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_sam.train.config import MODEL_PRESETS, RunConfig
from edge_sam.train.finetune import FinetuneConfig
from edge_sam.train.loop import TrainOutcome
from edge_sam.train.sami import SamiConfig
from edge_sam.train.state import STATE_FILE

from .run_flags import add_optimizer_arguments, add_session_arguments, config_from_args


def _add_run_arguments(parser: argparse.ArgumentParser, defaults: RunConfig) -> None:
    parser.add_argument("data", help="training data: an SA-1B folder or COCO instances file/folder")
    parser.add_argument("--out", dest="out_dir", required=True,
                        help="run folder: log.jsonl, state.pt (checkpoint for --resume) and the final model")
    parser.add_argument("--model", choices=sorted(MODEL_PRESETS), default=defaults.model,
                        help=f"architecture preset (default {defaults.model})")
    parser.add_argument("--img-size", type=int, default=defaults.img_size,
                        help=f"square model input size, a multiple of 16 (default {defaults.img_size})")
    add_optimizer_arguments(parser, defaults)
    parser.add_argument("--grad-clip", type=float, default=defaults.grad_clip, help="max gradient norm")
    parser.add_argument("--flip-prob", type=float, default=defaults.flip_prob, help="random horizontal flip probability")
    add_session_arguments(parser, defaults)


def register(subparsers: argparse._SubParsersAction) -> None:
    ft_defaults = FinetuneConfig(data="", out_dir="")
    train = subparsers.add_parser("train", help="finetune EfficientSAM on masks with box/point/correction prompts")
    _add_run_arguments(train, ft_defaults)
    train.add_argument("--max-objects", type=int, default=ft_defaults.max_objects,
                       help=f"objects (prompts) per image per step (default {ft_defaults.max_objects})")
    train.add_argument("--box-prob", type=float, default=ft_defaults.box_prob,
                       help=f"share of box prompts; the rest are 1-3 points (default {ft_defaults.box_prob})")
    train.add_argument("--correction-prob", type=float, default=ft_defaults.correction_prob,
                       help=f"share of steps with a correction-click second pass (default {ft_defaults.correction_prob})")
    start = train.add_mutually_exclusive_group()
    start.add_argument("--init", default=None, help="start from this full checkpoint (its architecture is used)")
    start.add_argument("--init-encoder", default=None,
                       help="start the image encoder from this checkpoint (e.g. edge-sam pretrain's sami_encoder.safetensors)")
    train.add_argument("--val-data", default=None, help="validation split for periodic box / 1-click mIoU")
    train.add_argument("--val-every", type=int, default=ft_defaults.val_every, help="validate every N steps (0: only at the end)")
    train.add_argument("--val-images", type=int, default=ft_defaults.val_images,
                       help=f"validation images used (default {ft_defaults.val_images})")
    train.set_defaults(run=run_train)

    sami_defaults = SamiConfig(data="", out_dir="")
    pretrain = subparsers.add_parser("pretrain", help="SAMI: pretrain the image encoder to reproduce a teacher's features")
    _add_run_arguments(pretrain, sami_defaults)
    pretrain.add_argument("--teacher", required=True,
                          help="teacher checkpoint (its image encoder gives the target features)")
    pretrain.add_argument("--teacher-img-size", type=int, default=None,
                          help="teacher input size (default: the teacher checkpoint's own)")
    pretrain.add_argument("--mask-ratio", type=float, default=sami_defaults.mask_ratio,
                          help=f"share of hidden tokens (default {sami_defaults.mask_ratio})")
    pretrain.add_argument("--decoder-depth", type=int, default=sami_defaults.decoder_depth,
                          help=f"cross-attention decoder blocks (default {sami_defaults.decoder_depth})")
    pretrain.set_defaults(run=run_pretrain)


def run_train(args: argparse.Namespace) -> int:
    from edge_sam.train.finetune import finetune

    _report(finetune(config_from_args(FinetuneConfig, args)), args.out_dir)
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    from edge_sam.train.sami import pretrain

    _report(pretrain(config_from_args(SamiConfig, args)), args.out_dir)
    return 0


def _report(outcome: TrainOutcome, out_dir: str) -> None:
    if outcome.rank != 0:
        return
    if outcome.saved is not None:
        print(f"saved {outcome.saved}")
    else:
        print(f"stopped at step {outcome.step}; continue with --resume ({Path(out_dir) / STATE_FILE})")
