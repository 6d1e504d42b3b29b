"""The ONNX graphs: the deploy form and the official interface, exported with torch.onnx (dynamo).

Official interface (the files labelme, osam and X-AnyLabeling load):

- encoder ``batched_images`` float32 [B, 3, H, W] in [0, 1], any H and W -> ``image_embeddings``;
- decoder ``image_embeddings``, ``batched_point_coords`` [B, Q, N, 2] (image pixels),
  ``batched_point_labels`` [B, Q, N], ``orig_im_size`` int64 [2] -> ``output_masks``
  [B, Q, 3, H, W] logits, ``iou_predictions`` [B, Q, 3], ``low_res_masks`` [B, Q, 3, 4h, 4w].

Both wrap the deploy-form graphs of :mod:`edge_sam.deploy_form`, so the two interfaces share one
network. Two things are written so ONNX shape inference stays exact: prompts are padded or
truncated to the decoder's slots by concat-then-slice (no branch on N), and embeddings are
broadcast to the queries with expand + reshape (peers' exports used a 5-D Tile that fails the
checker). The upsampling of masks to ``orig_im_size`` is a value-dependent size, which
torch.export cannot trace, so it is appended to the exported graph as two matmuls with
interpolation matrices built from ``orig_im_size``: torch's bilinear (what the official ONNX
files do, the default) or bicubic (what ``EfficientSam.predict_masks`` does), see ``UPSAMPLE``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_sam.modeling import EfficientSam
from edge_sam.transforms import preprocess
from edge_sam.graph_contract import CONTEXT_NAMES, IO_NAMES, deploy_graph, whole_decoder_graph
from edge_sam.targets.core.toolchain_log import capture

OPSET = 18

OFFICIAL_ENCODER_IO = (["batched_images"], ["image_embeddings"])
OFFICIAL_DECODER_INPUTS = ["image_embeddings", "batched_point_coords", "batched_point_labels", "orig_im_size"]
OFFICIAL_DECODER_OUTPUTS = ["output_masks", "iou_predictions", "low_res_masks"]
# How the official decoder upsamples low-res logits to orig_im_size; the first is the default:
# the reference repo's ONNX files (the ones labelme/osam replace) use bilinear.
UPSAMPLE = ("bilinear", "bicubic")


class OfficialEncoder(nn.Module):
    """[B, 3, H, W] in [0, 1], any size -> embeddings, with edge_sam's preprocessing in the graph."""

    def __init__(self, model: EfficientSam, img_size: int) -> None:
        super().__init__()
        self.deploy_encoder = deploy_graph(model, img_size, "encoder")
        self.img_size = img_size

    def forward(self, batched_images: torch.Tensor) -> torch.Tensor:
        return self.deploy_encoder(preprocess(batched_images, self.img_size))


class OfficialDecoder(nn.Module):
    """Image-pixel prompts for Q queries per image -> low-res logits [B, Q, 3, 4h, 4w] and IoU [B, Q, 3].

    The same steps as ``EfficientSam.predict_masks``: rescale points to model pixels (negative
    coordinates stay padding), pad or truncate to the slots, decode every query.
    """

    def __init__(self, model: EfficientSam, img_size: int) -> None:
        super().__init__()
        self.deploy_decoder = whole_decoder_graph(model, img_size)
        self.img_size = img_size
        self.slots = model.decoder_max_num_input_points

    def forward(
        self, image_embeddings: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, orig_im_size: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, q = coords.shape[:2]
        hw = orig_im_size.to(torch.float32)
        x, y = coords[..., 0], coords[..., 1]
        points = torch.stack(
            [torch.where(x >= 0, x * self.img_size / hw[1], -1.0), torch.where(y >= 0, y * self.img_size / hw[0], -1.0)],
            dim=-1,
        )
        points = torch.cat([points, torch.full((b, q, self.slots, 2), -1.0)], dim=2)[:, :, : self.slots]
        labels = torch.cat([labels, torch.full((b, q, self.slots), -1.0)], dim=2)[:, :, : self.slots]
        c, h, w = image_embeddings.shape[1:]
        per_query = image_embeddings[:, None].expand(b, q, c, h, w).reshape(b * q, c, h, w)
        low_res, iou = self.deploy_decoder(per_query, points.reshape(b * q, self.slots, 2), labels.reshape(b * q, self.slots))
        return low_res.reshape(b, q, *low_res.shape[1:]), iou.reshape(b, q, iou.shape[-1])


def _export(module: nn.Module, args: tuple, path: Path, names: tuple[list[str], list[str]], dynamic_shapes=None):
    """torch.onnx.export (dynamo); its progress chatter and warnings go to the export's toolchain log."""
    module = module.eval()
    with capture("torch.onnx.export"), torch.no_grad():
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=OPSET, input_names=names[0], output_names=names[1],
            dynamic_shapes=dynamic_shapes, optimize=True, verbose=False,
        )
        program.save(str(path))


def export_deploy_encoder(model: EfficientSam, img_size: int, path: Path) -> None:
    graph = deploy_graph(model, img_size, "encoder")
    _export(graph, graph.example_inputs(), path, IO_NAMES["encoder"])


def export_deploy_context(model: EfficientSam, img_size: int, path: Path) -> None:
    graph = deploy_graph(model, img_size, "context")
    _export(graph, graph.example_inputs(), path, IO_NAMES["context"])


def export_deploy_decoder(model: EfficientSam, img_size: int, path: Path, prompt_batch: int | None = None) -> None:
    """The per-prompt decoder, by default with a symbolic prompt batch: one image's context
    (batch 1) serves every row, so a batch of prompts is one call (everything-mode's grid);
    ``prompt_batch`` fixes it (static shapes, as TensorRT takes them)."""
    graph = deploy_graph(model, img_size, "decoder")
    if prompt_batch is not None:
        _export(graph, graph.example_inputs(batch=prompt_batch), path, IO_NAMES["decoder"])
        return
    prompts = torch.export.Dim("prompts")
    dynamic = (*(None for _ in CONTEXT_NAMES), {0: prompts}, {0: prompts})
    _export(graph, graph.example_inputs(batch=2), path, IO_NAMES["decoder"], dynamic)


def export_official_encoder(model: EfficientSam, img_size: int, path: Path) -> None:
    # Example sizes away from img_size and from 1 keep every axis symbolic in the trace.
    example = torch.rand(2, 3, img_size // 2 + 3, img_size + 5)
    dim = torch.export.Dim
    dynamic = ({0: dim("batch"), 2: dim("height", min=2), 3: dim("width", min=2)},)
    _export(OfficialEncoder(model, img_size), (example,), path, OFFICIAL_ENCODER_IO, dynamic)


def export_official_decoder(model: EfficientSam, img_size: int, path: Path, upsample: str = UPSAMPLE[0]) -> None:
    grid = img_size // model.image_encoder.patch_size
    example = (
        torch.randn(2, model.config.neck_dim, grid, grid),
        torch.rand(2, 3, 4, 2) * img_size,
        torch.ones(2, 3, 4),
        torch.tensor([img_size, img_size], dtype=torch.int64),
    )
    batch, queries, points = (torch.export.Dim(n) for n in ("batch", "num_queries", "num_points"))
    dynamic = ({0: batch}, {0: batch, 1: queries, 2: points}, {0: batch, 1: queries, 2: points}, None)
    _export(OfficialDecoder(model, img_size), example, path, (OFFICIAL_DECODER_INPUTS, ["low_res_masks", "iou_predictions"]), dynamic)
    _append_full_size_masks(path, upsample)


class _GraphBuilder:
    """Appends nodes and constants to an ONNX graph with generated, prefixed tensor names."""

    def __init__(self, graph, prefix: str) -> None:
        self.graph, self.prefix, self.count = graph, prefix, 0

    def const(self, value, dtype) -> str:
        from onnx import numpy_helper

        name = self._name("const")
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs) -> str:
        from onnx import helper

        output = output or self._name(op_type.lower())
        self.graph.node.append(helper.make_node(op_type, list(inputs), [output], name=f"{self.prefix}/{output}", **attrs))
        return output

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{self.prefix}_{kind}_{self.count}"


def _source_coordinate(b: _GraphBuilder, out_len: str, in_len: int) -> str:
    """torch's source coordinate of each output index (align_corners=False): (i + 0.5) * in/out - 0.5,
    the scale computed in float32 from the sizes, as torch does when given an output size."""
    from onnx import TensorProto

    f32 = np.float32
    length = b.op("Cast", out_len, to=TensorProto.FLOAT)
    index = b.op("Range", b.const(0.0, f32), length, b.const(1.0, f32))
    scale = b.op("Div", b.const(float(in_len), f32), length)
    return b.op("Sub", b.op("Mul", b.op("Add", index, b.const(0.5, f32)), scale), b.const(0.5, f32))


def _tap_matrix(b: _GraphBuilder, floor: str, weights: dict[int, str], in_len: int) -> str:
    """[out, in] matrix with ``weights[k]`` at column clamp(floor + k) of each row (taps that
    clamp onto the same edge column add up, as torch's kernels do)."""
    from onnx import TensorProto

    f32 = np.float32
    columns = b.op("Unsqueeze", b.op("Range", b.const(0.0, f32), b.const(float(in_len), f32), b.const(1.0, f32)), b.const([0], np.int64))
    matrix = None
    for offset, weight in weights.items():
        tap = b.op("Clip", b.op("Add", floor, b.const(float(offset), f32)), b.const(0.0, f32), b.const(in_len - 1.0, f32))
        hit = b.op("Cast", b.op("Equal", b.op("Unsqueeze", tap, b.const([1], np.int64)), columns), to=TensorProto.FLOAT)
        term = b.op("Mul", hit, b.op("Unsqueeze", weight, b.const([1], np.int64)))
        matrix = term if matrix is None else b.op("Add", matrix, term)
    return matrix


def _bilinear_matrix(b: _GraphBuilder, out_len: str, in_len: int) -> str:
    """[out_len, in_len] matrix M with M @ x = torch's bilinear resize of x along one axis
    (align_corners=False, no antialias): the source coordinate clamped at 0, taps floor and
    floor + 1 clamped to the edge, weights 1 - t and t."""
    f32 = np.float32
    source = b.op("Max", _source_coordinate(b, out_len, in_len), b.const(0.0, f32))
    floor = b.op("Floor", source)
    t = b.op("Sub", source, floor)
    return _tap_matrix(b, floor, {0: b.op("Sub", b.const(1.0, f32), t), 1: t}, in_len)


def _bicubic_matrix(b: _GraphBuilder, out_len: str, in_len: int) -> str:
    """[out_len, in_len] matrix M with M @ x = torch's bicubic resize of x along one axis.

    torch (align_corners=False): source = (i + 0.5) * in/out - 0.5, four taps at floor - 1 ..
    floor + 2 clamped to the edge, Keys' cubic with a = -0.75. A resize is then two matmuls,
    which onnxruntime runs ~50x faster than its own cubic Resize kernel (1.2 s for 3 x 256^2 ->
    603 x 1072 on our CPU).
    """
    f32 = np.float32
    a = -0.75
    source = _source_coordinate(b, out_len, in_len)
    floor = b.op("Floor", source)
    t = b.op("Sub", source, floor)

    def near(x: str) -> str:  # ((a + 2) x - (a + 3)) x^2 + 1, for |x| <= 1
        inner = b.op("Sub", b.op("Mul", b.const(a + 2, f32), x), b.const(a + 3, f32))
        return b.op("Add", b.op("Mul", b.op("Mul", inner, x), x), b.const(1.0, f32))

    def far(x: str) -> str:  # ((a x - 5a) x + 8a) x - 4a, for 1 < |x| < 2
        inner = b.op("Add", b.op("Mul", b.op("Sub", b.op("Mul", b.const(a, f32), x), b.const(5 * a, f32)), x), b.const(8 * a, f32))
        return b.op("Sub", b.op("Mul", inner, x), b.const(4 * a, f32))

    one_minus_t = b.op("Sub", b.const(1.0, f32), t)
    weights = {
        -1: far(b.op("Add", t, b.const(1.0, f32))),
        0: near(t),
        1: near(one_minus_t),
        2: far(b.op("Add", one_minus_t, b.const(1.0, f32))),
    }
    return _tap_matrix(b, floor, weights, in_len)


_MATRICES = {"bilinear": _bilinear_matrix, "bicubic": _bicubic_matrix}


def _append_full_size_masks(path: Path, upsample: str) -> None:
    """Add ``output_masks``: low-res logits upsampled (``upsample``: bilinear or bicubic) to
    ``orig_im_size``; official output order."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    low_res_info, iou_info = (next(o for o in graph.output if o.name == n) for n in ("low_res_masks", "iou_predictions"))
    dims = [d.dim_param or d.dim_value for d in low_res_info.type.tensor_type.shape.dim]
    low_h, low_w = dims[3], dims[4]
    b = _GraphBuilder(graph, "upsample")
    i64 = np.int64
    height = b.op("Slice", "orig_im_size", b.const([0], i64), b.const([1], i64))
    width = b.op("Slice", "orig_im_size", b.const([1], i64), b.const([2], i64))
    matrix = _MATRICES[upsample]
    rows = matrix(b, b.op("Squeeze", height), low_h)  # [H, h]
    cols = matrix(b, b.op("Squeeze", width), low_w)  # [W, w]
    along_w = b.op("MatMul", "low_res_masks", b.op("Transpose", cols, perm=[1, 0]))  # [B, Q, M, h, W]
    b.op("MatMul", rows, along_w, output="output_masks")  # [B, Q, M, H, W]
    masks = helper.make_tensor_value_info("output_masks", TensorProto.FLOAT, [*dims[:3], "image_height", "image_width"])
    del graph.output[:]
    graph.output.extend([masks, iou_info, low_res_info])
    onnx.save(model, str(path))
