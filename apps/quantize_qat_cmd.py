"""``edge-sam quantize qat``: quantization-aware finetuning of the encoder, distilled from the fp32 model.

Runs as one process or under ``torchrun --nproc_per_node N -m edge_sam.apps.cli quantize qat ...``
(DDP: gloo on CPU, nccl on CUDA); only rank 0 prints and writes. The ``--out`` folder becomes a
QAT checkpoint that ``edge-sam export --checkpoint OUT`` turns into INT8 artifacts.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from edge_sam.quantize.recipes import DEFAULT_RECIPE
from edge_sam.train.config import TRAINING_PRECISIONS
from edge_sam.train.state import STATE_FILE

from .cmd_export import recipe_argument


def add_qat_parser(quantize_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``qat`` to the ``edge-sam quantize`` sub-commands."""
    from edge_sam.quantize.qat import QatConfig

    d = QatConfig(data="", out_dir="")
    parser = quantize_subparsers.add_parser(
        "qat", help="quantization-aware finetuning: fake-quantized encoder distilled from the fp32 model (no labels)"
    )
    parser.add_argument("--checkpoint", default=d.checkpoint,
                        help="the fp32 model to start from and distil from (default: the bundled 'reference')")
    parser.add_argument("--images", dest="data", required=True, metavar="DIR",
                        help="training images: a folder of images (no labels needed) or a dataset (its objects place the prompts)")
    parser.add_argument("--out", dest="out_dir", required=True, metavar="DIR",
                        help="QAT checkpoint folder: model.safetensors, qat.json, log.jsonl, state.pt (for --resume)")
    parser.add_argument("--recipe", type=recipe_argument, default=d.recipe, metavar="NAME|FILE",
                        help=f"the int8 recipe to train for: a registry name or a recipe file (default {DEFAULT_RECIPE})")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per step per process (default {d.batch_size})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate (default {d.lr})")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"(default {d.weight_decay})")
    parser.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help=f"(default {d.warmup_steps})")
    parser.add_argument("--img-size", type=int, default=None, help="encoder input size (default: the checkpoint's)")
    parser.add_argument("--max-objects", type=int, default=d.max_objects,
                        help=f"prompts per image per step (default {d.max_objects})")
    parser.add_argument("--embedding-weight", type=float, default=d.embedding_weight,
                        help=f"weight of the normalized embedding MSE (default {d.embedding_weight})")
    parser.add_argument("--mask-weight", type=float, default=d.mask_weight,
                        help=f"weight of the mask-logit KL vs the fp32 decoder's masks (default {d.mask_weight})")
    parser.add_argument("--calibration-images", type=int, default=d.calibration_images, metavar="N",
                        help=f"static recipes: the first N images set the initial activation ranges (min/max, as PTQ "
                             f"calibrates; default {d.calibration_images})")
    parser.add_argument("--freeze-observers", type=float, default=d.freeze_observers, metavar="SHARE",
                        help="share of the steps during which activation ranges still move (moving averages) before "
                             f"they freeze (default {d.freeze_observers}: frozen at the calibrated ranges throughout)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device, help="cpu or cuda (default cpu)")
    parser.add_argument("--precision", choices=TRAINING_PRECISIONS, default=d.precision,
                        help="bf16 autocasts the forward pass (GPUs); weights stay fp32 (default fp32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    parser.add_argument("--workers", dest="num_workers", type=int, default=d.num_workers,
                        help="DataLoader worker processes (default 0)")
    parser.add_argument("--checkpoint-minutes", type=float, default=d.checkpoint_minutes,
                        help=f"write state.pt at most this often (default {d.checkpoint_minutes})")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="end this session at this step (checkpointed); the schedule still spans --steps")
    parser.add_argument("--stop-after-minutes", type=float, default=None,
                        help="end this session after this much wall time (checkpointed; continue with --resume)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its state.pt")
    parser.add_argument("--log-every", type=int, default=d.log_every, help="one log.jsonl record per N steps")
    parser.set_defaults(run=run_qat)
    return parser


def run_qat(args: argparse.Namespace) -> int:
    from edge_sam.quantize.qat import QatConfig, quantization_aware_finetune

    names = {f.name for f in dataclasses.fields(QatConfig)}
    config = QatConfig(**{k: v for k, v in vars(args).items() if k in names})
    outcome = quantization_aware_finetune(config)
    if outcome.rank != 0:
        return 0
    if outcome.saved is not None:
        out = Path(args.out_dir)
        print(f"wrote QAT checkpoint {out}: {outcome.saved.name} + qat.json; export it with "
              f"edge-sam export --checkpoint {out} --precision int8 --target TARGET --calibration DIR --out ART")
    else:
        print(f"stopped at step {outcome.step}; continue with --resume ({Path(args.out_dir) / STATE_FILE})")
    return 0
