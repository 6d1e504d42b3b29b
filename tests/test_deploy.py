"""Deploy graphs: same numbers as the model, exportable, nothing above rank 4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_sam.deploy_form import DecoderGraph, EncoderGraph, pad_prompts
from edge_sam.errors import PromptError
from edge_sam.transforms import image_to_tensor, preprocess


def _max_rank(program: torch.export.ExportedProgram) -> int:
    ranks = [
        node.meta["val"].dim()
        for node in program.graph.nodes
        if isinstance(node.meta.get("val"), torch.Tensor)
    ]
    return max(ranks)


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sdpa", "matmul"])
def test_encoder_graph_matches_model_at_1024(parity_model, dogs, attention):
    image = image_to_tensor(dogs)
    with torch.inference_mode():
        expected = parity_model.get_image_embeddings(image)
        actual = EncoderGraph(parity_model, attention=attention)(preprocess(image, 1024))
    assert (actual - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("attention", ["sdpa", "matmul"])
def test_decoder_graph_matches_model(parity_model, parity_outputs, attention):
    embeddings = torch.from_numpy(parity_outputs["image_embeddings"])
    points, labels = parity_outputs["batched_points"][0], parity_outputs["batched_point_labels"][0]
    graph = DecoderGraph(parity_model, attention=attention)
    for query in range(2):
        coords, slot_labels = pad_prompts(points[query], labels[query], (603, 1072), 1024)
        with torch.inference_mode():
            expected, expected_iou = parity_model.predict_masks(
                embeddings, torch.from_numpy(points[query])[None, None], torch.from_numpy(labels[query])[None, None],
                True, 603, 1072,
            )
            actual, iou = graph(embeddings, torch.from_numpy(coords)[None], torch.from_numpy(slot_labels)[None])
        assert actual.shape == (1, 3, 256, 256)
        assert (actual - expected[0]).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
        assert (iou - expected_iou[0]).abs().max() <= 1e-5


def test_single_mask_variant_is_token_zero(tiny_model):
    multi, single = DecoderGraph(tiny_model), DecoderGraph(tiny_model, multimask=False)
    inputs = multi.example_inputs()
    with torch.inference_mode():
        all_masks, all_iou = multi.mask_decoder.predict_masks(
            inputs[0], multi.dense_pe, multi.prompt_encoder(inputs[1], inputs[2], multi.img_size)
        )
        masks, iou = single(*inputs)
    assert masks.shape[1] == 1
    assert torch.equal(masks, all_masks[:, :1]) and torch.equal(iou, all_iou[:, :1])


def test_encoder_at_another_size_uses_a_resized_position_grid(tiny_model):
    graph = EncoderGraph(tiny_model, img_size=96)
    assert graph.position.shape[1:3] == (6, 6)
    assert graph(*graph.example_inputs()).shape == (1, tiny_model.config.neck_dim, 6, 6)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        EncoderGraph(tiny_model, img_size=100)


@pytest.mark.parametrize("strict", [True, False])
def test_graphs_export_with_rank_at_most_4(tiny_model, strict):
    for graph in (EncoderGraph(tiny_model, attention="matmul"), DecoderGraph(tiny_model, attention="matmul")):
        inputs = graph.example_inputs()
        program = torch.export.export(graph, inputs, strict=strict)
        assert _max_rank(program) <= 4
        with torch.inference_mode():
            expected = graph(*inputs)
            actual = program.module()(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = actual if isinstance(actual, tuple) else (actual,)
        for e, a in zip(expected, actual):
            assert torch.allclose(e, a, atol=1e-6)


def test_full_size_graphs_export(parity_model):
    for graph in (EncoderGraph(parity_model), DecoderGraph(parity_model)):
        program = torch.export.export(graph, graph.example_inputs(), strict=False)
        assert _max_rank(program) <= 4


def test_pad_prompts_scales_axes_separately_and_refuses_overflow():
    coords, labels = pad_prompts(np.array([[536, 301.5]]), np.array([1]), (603, 1072), 1024)
    np.testing.assert_allclose(coords[0], [512, 512])
    assert (coords[1:] == -1).all() and labels.tolist() == [1, -1, -1, -1, -1, -1]
    with pytest.raises(PromptError, match="at most 6"):
        pad_prompts(np.zeros((7, 2)), np.ones(7), (10, 10), 1024)
