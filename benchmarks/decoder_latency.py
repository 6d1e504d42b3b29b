"""PyTorch decoder per prompt: one prompt (with and without the per-image context), and per
prompt in a batch, against the decoder of another git revision, in interleaved rounds.

    python benchmarks/decoder_latency.py [--against REV] [--threads 1] [--rounds 15] [--batch 16] [--chunks 1,2,4]

Every variant decodes the same random embedding (1024 px, parity checkpoint: latency does not
depend on the weights) and the same clicks; times are the minimum over rounds, wall and process
CPU time (on a shared CPU the CPU time is the steadier of the two). ``--against REV`` loads
``edge_sam/modeling/{common,config,transformer,mask_decoder}.py`` as they were at REV (git show)
with the same weights, so a change to the decoder can be measured before it is committed; its
outputs are checked against the current decoder's. ``--chunks`` also times the cached-context
batch at each of these ``MaskDecoder.prompt_chunk`` values (prompts per call), the knob that keeps
a batch's per-prompt image tensors in the caches. The exported decoders (ONNX Runtime, ExecuTorch,
LiteRT) are timed the same way by ``benchmarks/exported_decoder_latency.py``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import edge_sam

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT / "tests" / "data" / "parity" / "efficient_sam_vitt_random_seed1234.pt"
MODULES = ("common", "config", "transformer", "mask_decoder")


def decoder_at(revision: str, folder: Path):
    """The MaskDecoder class of ``revision``, imported from its sources under a private name."""
    package = folder / f"decoder_{revision.replace('/', '_').replace('~', '_')}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in MODULES:
        source = subprocess.run(["git", "show", f"{revision}:edge_sam/modeling/{name}.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
        (package / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{package.name}.mask_decoder").MaskDecoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(PARITY))
    parser.add_argument("--against", default=None, metavar="REV", help="also time the decoder of this git revision")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--chunks", default="", help="comma-separated prompt_chunk values to time the cached batch at")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = edge_sam.load_model(args.checkpoint)
    grid = model.config.embedding_grid
    embedding = torch.randn(1, model.config.neck_dim, grid, grid, generator=torch.Generator().manual_seed(0))
    size = model.config.img_size

    def sparse(count: int) -> torch.Tensor:
        points = torch.rand(1, count, 1, 2, generator=torch.Generator().manual_seed(1)) * size
        padded, labels = model.pad_prompt_slots(points, torch.ones(1, count, 1))
        return model.prompt_encoder(padded.reshape(count, -1, 2), labels.reshape(count, -1)).reshape(1, count, -1, model.config.neck_dim)

    one, batch = sparse(1), sparse(args.batch)
    decoder = model.mask_decoder
    with torch.inference_mode():
        context = model.decoder_context(embedding)
        variants = {
            "now, context computed per call": (lambda s: decoder(embedding, model.prompt_encoder.get_dense_pe(), s, True)),
            "now, context cached per image": (lambda s: decoder(embedding, None, s, True, context=context)),
        }
        default_chunk = decoder.prompt_chunk

        def chunked(chunk: int):
            def run(s: torch.Tensor):
                decoder.prompt_chunk = chunk
                try:
                    return decoder(embedding, None, s, True, context=context)
                finally:
                    decoder.prompt_chunk = default_chunk
            return run

        for chunk in (int(c) for c in args.chunks.split(",") if c):
            variants[f"context cached, prompt_chunk {chunk}"] = chunked(chunk)
        with tempfile.TemporaryDirectory(prefix="decoder-latency-") as work:
            if args.against:
                old = decoder_at(args.against, Path(work))(model.config).eval()
                old.load_state_dict(decoder.state_dict())
                variants = {f"{args.against}": (lambda s: old(embedding, model.prompt_encoder.get_dense_pe(), s, True)),
                            **variants}
                expected = variants["now, context cached per image"](batch)[0]
                drift = (variants[args.against](batch)[0] - expected).abs().max().item()
                print(f"# {args.against} vs now: max |logit difference| {drift:.2e} on a batch of {args.batch}")
            best = {(name, n): [float("inf"), float("inf")] for name in variants for n in (1, args.batch)}
            loads = []
            for _ in range(args.rounds):
                loads.append(os.getloadavg()[0])
                for (name, n), times in best.items():
                    prompts = one if n == 1 else batch
                    wall, cpu = time.perf_counter(), time.process_time()
                    variants[name](prompts)
                    times[0] = min(times[0], (time.perf_counter() - wall) / n)
                    times[1] = min(times[1], (time.process_time() - cpu) / n)
    print(f"# decoder per prompt, {Path(args.checkpoint).name} ({size} px), {args.threads} threads, {args.rounds} "
          f"interleaved rounds (min), load average {min(loads):.1f}-{max(loads):.1f}")
    print(f"| decoder | 1 prompt ms (wall / CPU) | per prompt in a batch of {args.batch} ms (wall / CPU) |\n| --- | ---: | ---: |")
    for name in variants:
        single, many = best[(name, 1)], best[(name, args.batch)]
        print(f"| {name} | {single[0] * 1e3:.1f} / {single[1] * 1e3:.1f} | {many[0] * 1e3:.1f} / {many[1] * 1e3:.1f} |")


if __name__ == "__main__":
    main()
