"""EfficientSAM-Ti's FLOPs by part, from ``edge_sam.flops`` (analytic; tests check it against
``torch.utils.flop_counter``): the encoder at 1024, 768 and 512 px and the decoder per prompt at
1024, with and without the per-image context cached.

    python benchmarks/flops_table.py [--json docs/results/flops.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_sam.flops import decoder_flops, decoder_image_flops, encoder_flops
from edge_sam.modeling import EfficientSamConfig

sys.path.insert(0, str(Path(__file__).parent))
from records import record_header  # noqa: E402  (a sibling module)

SIZES = (1024, 768, 512)
# The decoder's projections over every image token (their cost grows with the image, not the prompt).
IMAGE_SIDE = ("token_to_image.k_proj", "token_to_image.v_proj", "token_to_image.kv_proj",
              "image_to_token.q_proj", "image_to_token.out_proj")


def flops_by_part(config: EfficientSamConfig) -> dict:
    encoder = {}
    for size in SIZES:
        count = encoder_flops(config, size)
        encoder[str(size)] = {"total": count.total, "attention": count.group("attention"), "linear": count.group("linear"),
                              "patch_embed_and_neck": count.group("patch_embed") + count.group("neck")}
    full, cached = decoder_flops(config, 1024), decoder_flops(config, 1024, cached=True)
    decoder = {"total": full.total, "cached_total": cached.total,
               "factored_total": decoder_flops(config, 1024, factored=True).total,  # the deploy form's per-prompt graph
               "per_image": decoder_image_flops(config, 1024).total,
               "image_side_projections": sum(v for k, v in full.parts.items() if k.endswith(IMAGE_SIDE)),
               "upscaling": full.group("upscaling")}
    return {"encoder": encoder, "decoder_1024": decoder}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None, help="write the record here")
    args = parser.parse_args(argv)
    record = {**record_header(), "model": "EfficientSAM-Ti (EfficientSamConfig.vitt)", "flops": flops_by_part(EfficientSamConfig.vitt())}
    print(json.dumps(record["flops"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
