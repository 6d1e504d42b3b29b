"""NumPy implementations of the Core ML (MIL) ops our encoder and decoder programs use.

Each function takes an op's inputs by their MIL parameter names (the names in the saved
program) and returns the op's output array, or a tuple of arrays for ops with several outputs.
Float inputs arrive as float32 (the executor widens fp16 before the call) and the executor
rounds every output to the dtype the program declares, so an fp16 program keeps fp16 storage
between ops while the arithmetic inside an op runs in float32 (the usual fp16 kernel contract:
fp16 operands, wider accumulation).

Semantics follow the op definitions of the MIL spec (coremltools ``mil/ops/defs``), including
their defaults for optional inputs. Compressed-weight ops (``constexpr_*``) and activation
quantization live in :mod:`.coreml_quant_ops`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

OpFunction = Callable[..., "np.ndarray | tuple[np.ndarray, ...]"]
OPS: dict[str, OpFunction] = {}

# MIL dtype names (as the ``cast`` op spells them) -> numpy dtypes.
MIL_DTYPES = {
    "fp16": np.float16, "fp32": np.float32, "fp64": np.float64,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "int64": np.int64, "bool": np.bool_,
}


class OpArgumentError(ValueError):
    """An op whose arguments the host executor does not implement (a pad mode, a rank)."""


def op(*names: str):
    """Register a function as the implementation of the MIL op(s) ``names``."""

    def register(function: OpFunction) -> OpFunction:
        for name in names:
            OPS[name] = function
        return function

    return register


def _axis(axis, rank: int) -> int:
    axis = int(axis)
    return axis + rank if axis < 0 else axis


def _axes(axes, rank: int) -> tuple[int, ...]:
    return tuple(_axis(a, rank) for a in np.atleast_1d(axes))


# -- elementwise --------------------------------------------------------------------------------
_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.divide, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum, "floor_div": np.floor_divide, "mod": np.mod,
    "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal,
    "logical_and": np.logical_and, "logical_or": np.logical_or, "logical_xor": np.logical_xor,
}
_UNARY = {
    "sqrt": np.sqrt, "square": np.square, "sin": np.sin, "cos": np.cos, "exp": np.exp,
    "abs": np.abs, "tanh": np.tanh, "floor": np.floor, "ceil": np.ceil, "sign": np.sign,
    "round": np.round, "logical_not": np.logical_not,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0),
}


def _binary(function):
    return lambda x, y: function(x, y)


def _unary(function):
    return lambda x: function(x)


for _name, _function in _BINARY.items():
    OPS[_name] = _binary(_function)
for _name, _function in _UNARY.items():
    OPS[_name] = _unary(_function)


@op("rsqrt")
def rsqrt(x, epsilon=1e-12):
    return 1.0 / np.sqrt(x + epsilon)


@op("inverse")
def inverse(x, epsilon=1e-4):
    return 1.0 / (x + epsilon)


@op("log")
def log(x, epsilon=1e-45):
    return np.log(x + epsilon)


@op("select")
def select(cond, a, b):
    return np.where(cond, a, b)


@op("erf")
def erf(x):
    return _erf(x)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float32 precision via torch (numpy has none; the result is exact to fp32)."""
    import torch

    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


@op("gelu")
def gelu(x, mode="EXACT"):
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1.0 + np.exp(-1.702 * x))
    raise OpArgumentError(f"gelu mode {mode!r} is not implemented")


@op("cast")
def cast(x, dtype):
    if dtype not in MIL_DTYPES:
        raise OpArgumentError(f"cast to {dtype!r} is not implemented")
    return np.asarray(x).astype(MIL_DTYPES[dtype])


# -- reductions and normalization -----------------------------------------------------------------
def _reduction(function):
    def reduce(x, axes=None, keep_dims=False):
        axis = None if axes is None else _axes(axes, x.ndim)
        return function(x, axis=axis, keepdims=bool(keep_dims))

    return reduce


for _name, _function in {"reduce_mean": np.mean, "reduce_sum": np.sum, "reduce_max": np.max,
                         "reduce_min": np.min, "reduce_prod": np.prod}.items():
    OPS[_name] = _reduction(_function)


@op("softmax")
def softmax(x, axis=-1):
    shifted = x - np.max(x, axis=int(axis), keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=int(axis), keepdims=True)


@op("layer_norm")
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    axes = tuple(range(x.ndim)) if axes is None else _axes(axes, x.ndim)
    mean = np.mean(x, axis=axes, keepdims=True)
    variance = np.mean(np.square(x - mean), axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(variance + epsilon)
    # gamma/beta have the shape of x.shape[axes] (the trailing axes in our graphs).
    if gamma is not None:
        out = out * gamma
    if beta is not None:
        out = out + beta
    return out


@op("batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    """Inference batch norm over axis 1 (channels) with stored statistics."""
    shape = [1, -1] + [1] * (x.ndim - 2)
    out = (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + epsilon)
    if gamma is not None:
        out = out * gamma.reshape(shape)
    if beta is not None:
        out = out + beta.reshape(shape)
    return out


# -- linear algebra -------------------------------------------------------------------------------
@op("linear")
def linear(x, weight, bias=None):
    out = np.matmul(x, weight.T)
    return out if bias is None else out + bias


@op("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    if transpose_x:
        x = np.swapaxes(x, -1, -2)
    if transpose_y:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@op("scaled_dot_product_attention")
def scaled_dot_product_attention(query, key, value, attn_mask=None):
    scores = np.matmul(query, np.swapaxes(key, -1, -2)) / np.sqrt(query.shape[-1])
    if attn_mask is not None:
        scores = np.where(attn_mask, scores, -np.inf) if attn_mask.dtype == np.bool_ else scores + attn_mask
    return np.matmul(softmax(scores, -1), value)


def _spatial_padding(pad_type: str, pad, in_size: Sequence[int], kernel: Sequence[int], strides, dilations) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis for conv's pad_type."""
    if pad_type == "valid":
        return [(0, 0)] * len(in_size)
    if pad_type == "custom":
        pad = [int(p) for p in pad]
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(in_size))]
    if pad_type in ("same", "same_lower"):
        padding = []
        for size, k, s, d in zip(in_size, kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            padding.append((small, large) if pad_type == "same" else (large, small))
        return padding
    raise OpArgumentError(f"conv pad_type {pad_type!r} is not implemented")


def _check_2d(x: np.ndarray, name: str) -> None:
    if x.ndim != 4:
        raise OpArgumentError(f"{name} over {x.ndim - 2} spatial dims is not implemented (2-D only)")


@op("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """Grouped 2-D convolution as one tensordot per group over strided windows."""
    _check_2d(x, "conv")
    kernel = weight.shape[2:]
    strides = [1, 1] if strides is None else [int(s) for s in strides]
    dilations = [1, 1] if dilations is None else [int(d) for d in dilations]
    padding = _spatial_padding(str(pad_type), pad, x.shape[2:], kernel, strides, dilations)
    x = np.pad(x, [(0, 0), (0, 0), *padding])
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    windows = sliding_window_view(x, span, axis=(2, 3))[:, :, :: strides[0], :: strides[1], :: dilations[0], :: dilations[1]]
    groups = int(groups)
    c_in, c_out = x.shape[1] // groups, weight.shape[0] // groups
    outs = [
        np.tensordot(windows[:, g * c_in:(g + 1) * c_in], weight[g * c_out:(g + 1) * c_out], axes=([1, 4, 5], [1, 2, 3]))
        for g in range(groups)
    ]
    out = np.concatenate(outs, axis=-1).transpose(0, 3, 1, 2)  # [N, H, W, C] -> [N, C, H, W]
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


@op("conv_transpose")
def conv_transpose(x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None, dilations=None, groups=1):
    """Transposed 2-D convolution: every input pixel scatters a kernel-sized patch, one kernel
    tap at a time (kernels are small), then the padding is cropped."""
    _check_2d(x, "conv_transpose")
    if int(groups) != 1:
        raise OpArgumentError("grouped conv_transpose is not implemented")
    if str(pad_type) not in ("valid", "custom"):
        raise OpArgumentError(f"conv_transpose pad_type {pad_type!r} is not implemented")
    n, _, h, w = x.shape
    c_out, kh, kw = weight.shape[1:]
    sh, sw = (1, 1) if strides is None else (int(s) for s in strides)
    dh, dw = (1, 1) if dilations is None else (int(d) for d in dilations)
    full = np.zeros((n, c_out, (h - 1) * sh + (kh - 1) * dh + 1, (w - 1) * sw + (kw - 1) * dw + 1), np.float32)
    for i in range(kh):
        for j in range(kw):
            tap = np.einsum("nchw,co->nohw", x, weight[:, :, i, j])
            full[:, :, i * dh: i * dh + (h - 1) * sh + 1: sh, j * dw: j * dw + (w - 1) * sw + 1: sw] += tap
    if str(pad_type) == "custom" and pad is not None:
        top, bottom, left, right = (int(p) for p in pad)
        full = full[:, :, top: full.shape[2] - bottom, left: full.shape[3] - right]
    if output_shape is not None:
        full = full[:, :, : int(output_shape[-2]), : int(output_shape[-1])]
    return full if bias is None else full + bias.reshape(1, -1, 1, 1)


# -- shape and data movement ------------------------------------------------------------------------
@op("transpose")
def transpose(x, perm):
    return np.transpose(x, [int(p) for p in perm])


@op("reshape")
def reshape(x, shape):
    shape = [x.shape[i] if int(s) == 0 and len(shape) == x.ndim else int(s) for i, s in enumerate(shape)]
    return np.reshape(x, shape)


@op("expand_dims")
def expand_dims(x, axes):
    rank = x.ndim + len(np.atleast_1d(axes))
    return np.expand_dims(x, _axes(axes, rank))


@op("squeeze")
def squeeze(x, axes=None):
    return np.squeeze(x) if axes is None else np.squeeze(x, _axes(axes, x.ndim))


@op("concat")
def concat(values, axis, interleave=False):
    if interleave:
        raise OpArgumentError("concat with interleave=True is not implemented")
    return np.concatenate(values, axis=int(axis))


@op("stack")
def stack(values, axis):
    return np.stack(values, axis=int(axis))


@op("split")
def split(x, axis, num_splits=None, split_sizes=None):
    axis = _axis(axis, x.ndim)
    if split_sizes is None:
        return tuple(np.split(x, int(num_splits), axis=axis))
    return tuple(np.split(x, np.cumsum([int(s) for s in split_sizes])[:-1], axis=axis))


@op("slice_by_index")
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    index = []
    for i in range(x.ndim):
        start = None if begin_mask is not None and begin_mask[i] else int(begin[i])
        if squeeze_mask is not None and squeeze_mask[i]:
            index.append(int(begin[i]))
            continue
        stop = None if end_mask is not None and end_mask[i] else int(end[i])
        step = 1 if stride is None else int(stride[i])
        index.append(slice(start, stop, step))
    return x[tuple(index)]


@op("scatter")
def scatter(data, indices, updates, axis=0, mode="update", validate_indices=False):
    axis = _axis(axis, data.ndim)
    indices = np.asarray(indices, np.int64).reshape(-1)
    if validate_indices and (np.any(indices < 0) or np.any(indices >= data.shape[axis])):
        raise OpArgumentError(f"scatter index out of range for axis {axis} of size {data.shape[axis]}")
    out = np.array(data, copy=True)
    target = np.moveaxis(out, axis, 0)
    moved = np.moveaxis(updates, axis, 0)
    if mode == "update":
        target[indices] = moved
    elif mode == "add":
        np.add.at(target, indices, moved)
    elif mode == "mul":
        np.multiply.at(target, indices, moved)
    else:
        raise OpArgumentError(f"scatter mode {mode!r} is not implemented")
    return out


@op("gather")
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    if int(batch_dims) != 0:
        raise OpArgumentError("gather with batch_dims is not implemented")
    axis = _axis(axis, x.ndim)
    indices = np.asarray(indices, np.int64)
    return np.take(x, np.where(indices < 0, indices + x.shape[axis], indices), axis=axis)
