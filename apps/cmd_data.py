"""``edge-sam data synth`` and ``edge-sam data info``: make and inspect datasets."""

from __future__ import annotations

import argparse

from edge_sam.data import generate_synthetic, open_dataset
from edge_sam.eval.metrics import SIZE_BUCKETS, size_bucket


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="make (synthetic SA-1B format) or inspect datasets")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    synth = commands.add_parser("synth", help="write synthetic SA-1B-format train/val/test splits")
    synth.add_argument("out_dir", help="folder that receives train/, val/ and test/")
    synth.add_argument("--train", type=int, default=100, help="training images (default 100)")
    synth.add_argument("--val", type=int, default=20, help="validation images (default 20)")
    synth.add_argument("--test", type=int, default=20, help="test images (default 20)")
    synth.add_argument("--img-size", type=int, default=256, help="square image side in pixels (default 256)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--background", action="append", metavar="IMAGE",
                       help="photo to take textures from; repeatable (default: the bundled sample photos)")
    synth.add_argument("--overwrite", action="store_true", help="replace existing split folders")
    synth.add_argument("--workers", type=int, default=1,
                       help="render in this many processes (default 1); the files do not depend on it")
    synth.set_defaults(run=run_synth)

    info = commands.add_parser("info", help="count images and objects (by COCO size bucket) in a dataset")
    info.add_argument("dataset", help="SA-1B folder, COCO instances .json, or COCO root folder")
    info.add_argument("--max-images", type=int, default=None, help="only read the first N images")
    info.set_defaults(run=run_info)


def run_synth(args: argparse.Namespace) -> int:
    folders = generate_synthetic(
        args.out_dir,
        counts={"train": args.train, "val": args.val, "test": args.test},
        img_size=args.img_size,
        seed=args.seed,
        background_images=args.background,
        workers=args.workers,
    )
    for split, folder in folders.items():
        print(f"{split}: {folder}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    dataset = open_dataset(args.dataset)
    n_images = len(dataset) if args.max_images is None else min(len(dataset), args.max_images)
    counts = dict.fromkeys(SIZE_BUCKETS, 0)
    empty = 0
    for index in range(n_images):
        for ann in dataset[index].annotations:
            if ann.area == 0:
                empty += 1
            else:
                counts[size_bucket(ann.area)] += 1
    print(f"{type(dataset).__name__} with {len(dataset)} images; read {n_images}")
    print(f"objects: {sum(counts.values())} ({', '.join(f'{k} {v}' for k, v in counts.items())}); empty masks: {empty}")
    return 0
