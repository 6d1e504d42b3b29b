"""The exported decoder's per-image context: the deploy form's context graph plus per-prompt
decoder give the masks of the whole decoder, in PyTorch and through every runtime's files, one
prompt at a time and (where the decoder graph takes a prompt batch) many at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_toolchain

import edge_sam

from edge_sam.deploy_form import ContextDecoderGraph, DecoderContextGraph, pad_prompts
from edge_sam.eval.metrics import mask_iou
from edge_sam.fixed_prompts import grid_prompts
from edge_sam.flops import decoder_flops
from edge_sam.graph_contract import CONTEXT_NAMES, IO_NAMES, deploy_graph, whole_decoder_graph
from edge_sam.targets import get_target, load_runner
from edge_sam.targets.core.artifact_runner import PROMPT_CHUNK
from edge_sam.targets.validation.drift import full_size_masks

pytestmark = pytest.mark.torch_threads(1)


def _grid_slots(image_hw: tuple[int, int], img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation grid prompts (clicks and boxes) in the decoder's slots: [Q, 6, 2], [Q, 6]."""
    padded = [pad_prompts(p.points, p.labels, image_hw, img_size) for p in grid_prompts(image_hw)]
    return torch.from_numpy(np.stack([c for c, _ in padded])), torch.from_numpy(np.stack([l for _, l in padded]))


def test_split_graphs_give_the_whole_decoders_numbers_at_1024(parity_model, parity_outputs):
    embedding = torch.from_numpy(parity_outputs["image_embeddings"])
    whole = whole_decoder_graph(parity_model, 1024)
    context_graph, decoder = deploy_graph(parity_model, 1024, "context"), deploy_graph(parity_model, 1024, "decoder")
    assert isinstance(context_graph, DecoderContextGraph) and isinstance(decoder, ContextDecoderGraph)
    coords, labels = _grid_slots((603, 1072), 1024)
    with torch.inference_mode():
        context = context_graph(embedding)
        batched = decoder(*context, coords, labels)  # a batch-1 context serves every prompt row
        for row in range(len(coords)):
            expected = whole(embedding, coords[row : row + 1], labels[row : row + 1])
            alone = decoder(*context, coords[row : row + 1], labels[row : row + 1])
            for e, a, b in zip(expected, alone, batched):
                scale = max(1.0, e.abs().max().item())
                assert (a - e).abs().max() <= 1e-5 * scale
                assert (b[row : row + 1] - e).abs().max() <= 1e-4 * scale
    assert [tuple(t.shape) for t in context] == [(1, 4096, 256), (1, 4096, 128), (1, 4096, 128), (1, 4096, 128)]
    assert IO_NAMES["context"][1] == CONTEXT_NAMES == IO_NAMES["decoder"][0][:4]


def test_factored_cross_attention_gives_the_plain_decoders_numbers(make_tiny_model):
    """The per-prompt graph with the image-side projections folded into the tokens, forced on the
    tiny config (where it is not the default): the same logits and IoU for a prompt batch on a
    batch-1 context, and for one prompt."""
    model = make_tiny_model(seed=5)
    plain = deploy_graph(model, model.config.img_size, "decoder")
    assert not plain.factored  # 4 heads x 11 tokens against a 16-wide attention: folding costs FLOPs
    folded = ContextDecoderGraph(plain.decoder, factored=True).eval()
    inputs = plain.example_inputs(batch=3)
    coords, labels = inputs[-2].clone(), inputs[-1].clone()
    coords[1, :2], labels[1, :2] = torch.tensor([[10.0, 50.0], [40.0, 20.0]]), torch.tensor([2.0, 3.0])
    coords[2, :2], labels[2, :2] = torch.tensor([[60.0, 5.0], [30.0, 35.0]]), torch.tensor([1.0, 0.0])
    with torch.inference_mode():
        for rows in (slice(0, 3), slice(1, 2)):
            args = (*inputs[:-2], coords[rows], labels[rows])
            for expected, got in zip(plain(*args), folded(*args)):
                assert (got - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_the_deploy_form_folds_where_it_counts_fewer_flops():
    reference = edge_sam.load_model("reference")  # EfficientSAM-Ti's decoder: 8 heads, 128-wide attention
    for size in (256, 1024):
        decoder = deploy_graph(reference, size, "decoder")
        assert decoder.factored
        config = reference.config
        assert decoder_flops(config, size, factored=True).total < 0.9 * decoder_flops(config, size, cached=True).total


TARGETS = {"onnx": "onnxruntime", "executorch": "executorch.runtime", "tflite": "ai_edge_litert.interpreter"}


MODEL_SEED = 3  # the tiny weights of conftest's module-scoped `model` fixture


@pytest.mark.parametrize("folded", [False, True], ids=["plain", "folded"])
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_artifact_masks_unchanged_by_the_split(tmp_path, model, dogs, target, folded, monkeypatch):
    """fp32 deploy artifacts: three graphs, and masks IoU >= 0.999 against the whole decoder in
    PyTorch on the artifact's own embedding, prompt by prompt and as one batch; with the folded
    cross-attention forced on the tiny model (real models fold by default) as well as without."""
    require_toolchain(TARGETS[target])
    for module in ("edge_sam.deploy_form", "edge_sam.targets.core.artifact_runner"):
        monkeypatch.setattr(f"{module}.folds_decoder_attention", lambda config, img_size=None: folded)
    artifact = get_target(target).export(model, "fp32", None, tmp_path / target)
    runner = load_runner(artifact)
    assert [g.role for g in runner.manifest.graphs] == ["encoder", "context", "decoder"]
    assert runner.folds_decoder_attention == folded
    image_hw = dogs.shape[:2]
    embedding = runner.encode(dogs)
    whole = whole_decoder_graph(model, runner.img_size)
    coords, labels = _grid_slots(image_hw, runner.img_size)
    with torch.inference_mode():
        expected, _ = whole(torch.from_numpy(embedding).expand(len(coords), -1, -1, -1), coords, labels)
    prompts = grid_prompts(image_hw)
    one_by_one = np.concatenate([runner.decode(embedding, p.points, p.labels, image_hw)[0] for p in prompts])
    points = np.full((len(prompts), 2, 2), -1.0, np.float32)
    point_labels = np.full((len(prompts), 2), -1.0, np.float32)
    for row, prompt in enumerate(prompts):
        points[row, : len(prompt.points)], point_labels[row, : len(prompt.labels)] = prompt.points, prompt.labels
    batched, _ = runner.decode_batch(embedding, points, point_labels, image_hw)
    for q in range(len(prompts)):
        reference = full_size_masks(expected[q : q + 1].numpy(), image_hw)
        for actual in (one_by_one, batched):
            masks = full_size_masks(actual[q : q + 1], image_hw)
            assert min(mask_iou(masks[k], reference[k]) for k in range(3)) >= 0.999


def test_everything_on_onnx_takes_the_context_once_and_prompt_chunks_per_decoder_call(tmp_path, model, dogs):
    """Segment-everything over an ONNX artifact: one context run for the image, PROMPT_CHUNK
    prompts per decoder call, and the masks of the same grid decoded by the PyTorch model."""
    require_toolchain("onnxruntime")
    from edge_sam.everything import EverythingConfig, EverythingGenerator
    from edge_sam.predictor import Predictor

    runner = load_runner(get_target("onnx").export(model, "fp32", None, tmp_path / "onnx"))
    calls: dict[str, list[int]] = {"context": [], "decoder": []}
    run_context, run_decoder = runner.run_context, runner.run_decoder

    def counted_context(embedding):
        calls["context"].append(len(embedding))
        return run_context(embedding)

    def counted_decoder(context, coords, labels):
        calls["decoder"].append(len(coords))
        return run_decoder(context, coords, labels)

    runner.run_context, runner.run_decoder = counted_context, counted_decoder
    config = EverythingConfig(points_per_side=4, points_per_batch=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    records = EverythingGenerator(Predictor(runner), config).generate(dogs, progress=False)
    reference = EverythingGenerator(Predictor(model), config).generate(dogs, progress=False)
    assert calls == {"context": [1], "decoder": [PROMPT_CHUNK] * (16 // PROMPT_CHUNK)}
    assert runner.keeps_decoder_context  # what the bench's per-prompt FLOP count takes on trust
    assert len(records) == len(reference) > 0
    for record in records:  # each mask has its match (fp32 noise may swap near-equal scores' order)
        assert max(mask_iou(record["segmentation"], r["segmentation"]) for r in reference) >= 0.99

    # More prompts than a call takes: chunks of PROMPT_CHUNK, the same outputs as one by one.
    calls["decoder"].clear()
    embedding = runner.encode(dogs)
    points = np.random.default_rng(0).uniform(0, 500, (PROMPT_CHUNK * 2 + 1, 1, 2)).astype(np.float32)
    labels = np.ones((len(points), 1), np.float32)
    batched, _ = runner.decode_batch(embedding, points, labels, dogs.shape[:2])
    assert calls["decoder"] == [PROMPT_CHUNK, PROMPT_CHUNK, 1]
    single = np.concatenate([runner.decode(embedding, p, l, dogs.shape[:2])[0] for p, l in zip(points, labels)])
    assert np.abs(batched - single).max() <= 1e-4 * max(1.0, np.abs(single).max())
