"""``edge-sam quantize qat``: quantization-aware finetuning of the encoder, distilled from the fp32 model.

Runs as one process or under ``torchrun --nproc_per_node N -m edge_sam.apps.cli quantize qat ...``
(DDP: gloo on CPU, nccl on CUDA); only rank 0 prints and writes. The ``--out`` folder becomes a
QAT checkpoint that ``edge-sam export --checkpoint OUT`` turns into INT8 artifacts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_sam.quantize.recipes import DEFAULT_RECIPE
from edge_sam.train.state import STATE_FILE

from .cmd_export import recipe_argument
from .run_flags import add_optimizer_arguments, add_session_arguments, config_from_args


def add_qat_parser(quantize_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``qat`` to the ``edge-sam quantize`` sub-commands."""
    from edge_sam.quantize.studies.qat import QatConfig

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
    add_optimizer_arguments(parser, d)
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
    add_session_arguments(parser, d)
    parser.set_defaults(run=run_qat)
    return parser


def run_qat(args: argparse.Namespace) -> int:
    from edge_sam.quantize.studies.qat import QatConfig, quantization_aware_finetune

    outcome = quantization_aware_finetune(config_from_args(QatConfig, args))
    if outcome.rank != 0:
        return 0
    if outcome.saved is not None:
        out = Path(args.out_dir)
        print(f"wrote QAT checkpoint {out}: {outcome.saved.name} + qat.json; export it with "
              f"edge-sam export --checkpoint {out} --precision int8 --target TARGET --calibration DIR --out ART")
    else:
        print(f"stopped at step {outcome.step}; continue with --resume ({Path(args.out_dir) / STATE_FILE})")
    return 0
