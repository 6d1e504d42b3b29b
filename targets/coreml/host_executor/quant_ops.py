"""NumPy implementations of the Core ML ops that carry compressed weights and quantized activations.

- ``constexpr_affine_dequantize`` (iOS16) and ``constexpr_blockwise_shift_scale`` (iOS18):
  int8/uint8/int4 weights with a scale and zero point, as ``linear_quantize_weights`` writes them.
- ``constexpr_lut_to_dense`` (iOS16 packed-index form and iOS18 per-group form): palettized
  weights, an n-bit index per element into a lookup table, as ``palettize_weights`` writes them.
- ``quantize`` / ``dequantize`` (iOS17): activation quantization, as a PT2E-quantized graph
  converts to.

The executor folds the ``constexpr_*`` ops once when it loads a program (their inputs are all
constants), so a run pays only for the float math, as on a device.
"""

from __future__ import annotations

import numpy as np

from edge_sam.targets.coreml.host_executor.ops import MIL_DTYPES, OpArgumentError, op


def _along(param: np.ndarray | None, axis, rank: int) -> np.ndarray | float:
    """A per-channel vector reshaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    if param is None:
        return 0.0
    param = np.asarray(param, np.float32)
    if param.ndim == 0 or param.size == 1 and axis is None:
        return param.reshape(())
    if param.ndim == rank:
        return param
    axis = int(axis) % rank
    shape = [1] * rank
    shape[axis] = param.size
    return param.reshape(shape)


def _expand_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Repeat a per-block parameter (same rank as the data) up to the data's full shape."""
    for axis, (size, blocks) in enumerate(zip(shape, param.shape)):
        if size % blocks:
            raise OpArgumentError(f"block parameter of shape {param.shape} does not tile data of shape {shape}")
        param = np.repeat(param, size // blocks, axis=axis)
    return param


@op("constexpr_affine_dequantize")
def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    rank = quantized_data.ndim
    return (quantized_data.astype(np.float32) - _along(zero_point, axis, rank)) * _along(scale, axis, rank)


@op("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(data, scale, offset=None):
    values = data.astype(np.float32)
    if offset is not None:
        values = values - _expand_blocks(offset.astype(np.float32), data.shape)
    return values * _expand_blocks(scale.astype(np.float32), data.shape)


def unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """n-bit unsigned elements packed least significant bit first into bytes (the iOS16 layout)."""
    bits = np.unpackbits(packed.astype(np.uint8).reshape(-1), bitorder="little")[: count * nbits]
    weights = (1 << np.arange(nbits, dtype=np.uint32)).astype(np.uint32)
    return (bits.reshape(count, nbits).astype(np.uint32) * weights).sum(axis=1)


@op("constexpr_lut_to_dense")
def constexpr_lut_to_dense(indices, lut, shape=None, vector_axis=None):
    if shape is not None:  # iOS16: one table for the whole tensor, indices bit-packed into uint8
        shape = [int(s) for s in shape]
        nbits = int(np.log2(lut.size))
        return lut.reshape(-1)[unpack_bits(indices, nbits, int(np.prod(shape)))].reshape(shape)
    # iOS18: lut is [*groups, palette, vector]; one table per block of the output.
    if lut.shape[-1] != 1:
        raise OpArgumentError("vector palettization (lut vector size > 1) is not implemented")
    groups = lut.shape[:-2]
    block = [size // count for size, count in zip(indices.shape, groups)]
    group_id = np.zeros(indices.shape, np.int64)
    for axis, (count, size) in enumerate(zip(groups, block)):
        coordinate = np.arange(indices.shape[axis]) // size
        group_id = group_id * count + coordinate.reshape([-1 if i == axis else 1 for i in range(indices.ndim)])
    return lut.reshape(int(np.prod(groups)), lut.shape[-2])[group_id, indices.astype(np.int64)]


@op("constexpr_cast")
def constexpr_cast(source_val, output_dtype):
    return source_val.astype(MIL_DTYPES[output_dtype])


@op("quantize")
def quantize(input, scale, output_dtype, zero_point=None, axis=None):
    dtype = MIL_DTYPES[output_dtype]
    info = np.iinfo(dtype)
    rank = input.ndim
    q = np.rint(input / _along(scale, axis, rank)) + _along(zero_point, axis, rank)
    return np.clip(q, info.min, info.max).astype(dtype)


@op("dequantize")
def dequantize(input, scale, zero_point=None, axis=None):
    rank = input.ndim
    return (input.astype(np.float32) - _along(zero_point, axis, rank)) * _along(scale, axis, rank)
