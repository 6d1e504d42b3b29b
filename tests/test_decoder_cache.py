"""The decoder's per-image context: cached, shared by a batch of prompts, and the same numbers.

The reference numbers are the uncached decoder computing everything from the embedding for
one prompt at a time (what the official implementation does); every cached or batched path
must reproduce them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_sam.deploy_form import DecoderGraph, pad_prompts
from edge_sam.flops import decoder_flops, decoder_image_flops
from edge_sam.runner import TorchRunner


def _prompts(model, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, Q, 2, 2] image-pixel prompts (a click, or a box every third query) and labels."""
    rng = np.random.default_rng(seed)
    size = model.config.img_size
    points = np.zeros((1, count, 2, 2), np.float32)
    labels = np.full((1, count, 2), -1.0, np.float32)
    for q in range(count):
        if q % 3 == 2:
            x0, y0 = rng.uniform(0, size / 2, 2)
            points[0, q] = [[x0, y0], [x0 + size / 3, y0 + size / 4]]
            labels[0, q] = [2, 3]
        else:
            points[0, q, 0] = rng.uniform(0, size, 2)
            labels[0, q, 0] = 1
    return torch.from_numpy(points), torch.from_numpy(labels)


def _one_at_a_time(model, embedding, points, labels):
    """Each query alone, no context given: the decoder computes everything from the embedding."""
    size = model.config.img_size
    outputs = [model.predict_masks(embedding, points[:, q : q + 1], labels[:, q : q + 1], True, size, size)
               for q in range(points.shape[1])]
    return torch.cat([o[0] for o in outputs], dim=1), torch.cat([o[1] for o in outputs], dim=1)


@torch.inference_mode()
def test_cached_context_and_batches_match_one_prompt_at_a_time(tiny_model):
    size = tiny_model.config.img_size
    embedding = torch.randn(1, tiny_model.config.neck_dim, size // 16, size // 16)
    points, labels = _prompts(tiny_model, 7)
    expected_masks, expected_iou = _one_at_a_time(tiny_model, embedding, points, labels)
    context = tiny_model.decoder_context(embedding)
    for chunk in (1, 3, 16):  # 7 queries in chunks that do and do not divide them
        tiny_model.mask_decoder.prompt_chunk = chunk
        for given in (None, context):
            masks, iou = tiny_model.predict_masks(embedding, points, labels, True, size, size, image_context=given)
            torch.testing.assert_close(masks, expected_masks, rtol=0, atol=1e-5)
            torch.testing.assert_close(iou, expected_iou, rtol=0, atol=1e-6)
    tiny_model.mask_decoder.prompt_chunk = type(tiny_model.mask_decoder).prompt_chunk


@torch.inference_mode()
def test_the_context_is_what_the_decoder_reads(tiny_model):
    """A context from another embedding gives that embedding's masks: the cached tensors are
    used, not recomputed from the embedding argument."""
    size = tiny_model.config.img_size
    first, second = (torch.randn(1, tiny_model.config.neck_dim, size // 16, size // 16) for _ in range(2))
    points, labels = _prompts(tiny_model, 2)
    expected, _ = tiny_model.predict_masks(second, points, labels, True, size, size)
    actual, _ = tiny_model.predict_masks(first, points, labels, True, size, size,
                                         image_context=tiny_model.decoder_context(second))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


@torch.inference_mode()
def test_several_images_with_one_query_each_keep_their_own_context(tiny_model):
    """The training path: B embeddings, one query each."""
    size = tiny_model.config.img_size
    embeddings = torch.randn(3, tiny_model.config.neck_dim, size // 16, size // 16)
    points, labels = _prompts(tiny_model, 3)
    points, labels = points.transpose(0, 1), labels.transpose(0, 1)  # [3, 1, ...]
    masks, iou = tiny_model.predict_masks(embeddings, points, labels, True, size, size)
    for b in range(3):
        alone, alone_iou = tiny_model.predict_masks(embeddings[b : b + 1], points[b : b + 1], labels[b : b + 1], True,
                                                    size, size)
        torch.testing.assert_close(masks[b : b + 1], alone, rtol=0, atol=1e-5)
        torch.testing.assert_close(iou[b : b + 1], alone_iou, rtol=0, atol=1e-6)


@torch.inference_mode()
def test_decoder_graph_shares_one_embedding_across_a_batch_of_prompts(tiny_model):
    """An embedding of batch 1 serves a batch of prompt rows (what a batch-decoding export takes)."""
    graph = DecoderGraph(tiny_model)
    size = tiny_model.config.img_size
    embedding = torch.randn(1, tiny_model.config.neck_dim, size // 16, size // 16)
    points, labels = _prompts(tiny_model, 4)
    slots = [pad_prompts(p, l, (size, size), size) for p, l in zip(points[0].numpy(), labels[0].numpy())]
    coords = torch.from_numpy(np.stack([c for c, _ in slots]))
    slot_labels = torch.from_numpy(np.stack([l for _, l in slots]))
    batch_masks, batch_iou = graph(embedding, coords, slot_labels)
    for q in range(4):
        masks, iou = graph(embedding, coords[q : q + 1], slot_labels[q : q + 1])
        torch.testing.assert_close(batch_masks[q : q + 1], masks, rtol=0, atol=1e-5)
        torch.testing.assert_close(batch_iou[q : q + 1], iou, rtol=0, atol=1e-6)


def test_torch_runner_batch_matches_single_decodes(tiny_model):
    runner = TorchRunner(tiny_model)
    size = tiny_model.config.img_size
    image = (np.random.default_rng(1).random((size, size + 8, 3)) * 255).astype(np.uint8)
    embedding = runner.encode(image)
    points, labels = _prompts(tiny_model, 5)
    batch_masks, batch_iou = runner.decode_batch(embedding, points[0].numpy(), labels[0].numpy(), image.shape[:2])
    for q in range(5):
        masks, iou = runner.decode(embedding, points[0, q].numpy(), labels[0, q].numpy(), image.shape[:2])
        np.testing.assert_allclose(batch_masks[q : q + 1], masks, atol=1e-5, rtol=0)
        np.testing.assert_allclose(batch_iou[q : q + 1], iou, atol=1e-6, rtol=0)


def test_cached_flops_leave_out_exactly_the_image_side_projections(tiny_model):
    config = tiny_model.config
    full, cached, image = decoder_flops(config), decoder_flops(config, cached=True), decoder_image_flops(config)
    assert full.total - cached.total == image.total > 0
    n, dim = (config.img_size // 16) ** 2, config.neck_dim
    assert image.total == 3 * 2 * n * dim * (dim // 2)


@pytest.mark.slow
@torch.inference_mode()
def test_parity_checkpoint_batch_of_16_matches_single_prompts(parity_model, parity_outputs):
    """Full size (1024, the official layout): a batch of 16 through the cached context gives
    each prompt's single-prompt numbers."""
    embedding = torch.from_numpy(parity_outputs["image_embeddings"])
    points, labels = _prompts(parity_model, 16, seed=3)
    expected_masks, expected_iou = _one_at_a_time(parity_model, embedding, points[:, :4], labels[:, :4])
    masks, iou = parity_model.predict_masks(embedding, points, labels, True, 1024, 1024)
    scale = expected_masks.abs().max().item()
    assert (masks[:, :4] - expected_masks).abs().max().item() <= 1e-5 * max(1.0, scale)
    assert (iou[:, :4] - expected_iou).abs().max().item() <= 1e-5
