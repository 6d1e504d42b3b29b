"""Every op of the host Core ML executor against PyTorch (or coremltools' own decompression) on
random inputs. A new op in the executor without a case here fails ``test_every_op_is_tested``."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_toolchain
import torch
import torch.nn.functional as F

require_toolchain("coremltools")

from edge_sam.targets.coreml.host_executor.executor import MilExecutor  # noqa: E402  (registers every op)
from edge_sam.targets.coreml.host_executor.ops import OPS, OpArgumentError  # noqa: E402

RNG = np.random.default_rng(0)


def rand(*shape, low=-2.0, high=2.0) -> np.ndarray:
    return RNG.uniform(low, high, shape).astype(np.float32)


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def run(name: str, **inputs):
    return OPS[name](**inputs)


def close(actual, expected, atol=1e-5, rtol=1e-5):
    expected = expected.numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), atol=atol, rtol=rtol)


# -- elementwise --------------------------------------------------------------------------------
BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "real_div": torch.div, "maximum": torch.maximum,
    "minimum": torch.minimum, "floor_div": torch.floor_divide, "mod": torch.remainder, "equal": torch.eq,
    "not_equal": torch.ne, "less": torch.lt, "less_equal": torch.le, "greater": torch.gt, "greater_equal": torch.ge,
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_broadcasting(name):
    x, y = rand(2, 3, 4), rand(3, 1)
    if name in ("floor_div", "mod", "real_div"):
        y = np.where(np.abs(y) < 0.3, 0.7, y).astype(np.float32)
    if name.endswith("equal") and name != "not_equal":
        y = np.round(y)
        x = np.round(x)
    close(run(name, x=x, y=y), BINARY[name](t(x), t(y)))


def test_pow():
    x, y = rand(3, 4, low=0.1), rand(3, 4)
    close(run("pow", x=x, y=y), torch.pow(t(x), t(y)), rtol=1e-5)


@pytest.mark.parametrize("name,reference", [("logical_and", torch.logical_and), ("logical_or", torch.logical_or),
                                            ("logical_xor", torch.logical_xor)])
def test_logical_binary(name, reference):
    x, y = rand(4, 5) > 0, rand(4, 5) > 0
    close(run(name, x=x, y=y), reference(t(x), t(y)))


UNARY = {
    "sqrt": (torch.sqrt, 0.01), "square": (torch.square, None), "sin": (torch.sin, None), "cos": (torch.cos, None),
    "exp": (torch.exp, None), "abs": (torch.abs, None), "tanh": (torch.tanh, None), "floor": (torch.floor, None),
    "ceil": (torch.ceil, None), "sign": (torch.sign, None), "round": (torch.round, None),
    "sigmoid": (torch.sigmoid, None), "relu": (torch.relu, None), "erf": (torch.erf, None),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name):
    reference, low = UNARY[name]
    x = rand(3, 5, 7, low=low if low is not None else -3.0)
    close(run(name, x=x), reference(t(x)), atol=1e-6)


def test_logical_not():
    x = rand(6) > 0
    close(run("logical_not", x=x), torch.logical_not(t(x)))


@pytest.mark.parametrize("name,reference", [
    ("rsqrt", lambda x, e: torch.rsqrt(x + e)), ("inverse", lambda x, e: 1.0 / (x + e)), ("log", lambda x, e: torch.log(x + e)),
])
def test_unary_with_epsilon(name, reference):
    x = rand(4, 4, low=0.1)
    close(run(name, x=x, epsilon=np.float32(1e-3)), reference(t(x), 1e-3), rtol=1e-5)


def test_select():
    cond, a, b = rand(3, 4) > 0, rand(3, 4), rand(1, 4)
    close(run("select", cond=cond, a=a, b=b), torch.where(t(cond), t(a), t(b)))


@pytest.mark.parametrize("mode,reference", [
    ("EXACT", lambda x: F.gelu(x)),
    ("TANH_APPROXIMATION", lambda x: F.gelu(x, approximate="tanh")),
    ("SIGMOID_APPROXIMATION", lambda x: x * torch.sigmoid(1.702 * x)),
])
def test_gelu(mode, reference):
    x = rand(2, 8, 16, low=-4, high=4)
    close(run("gelu", x=x, mode=mode), reference(t(x)), atol=1e-6)


def test_gelu_unknown_mode_is_a_clear_error():
    with pytest.raises(OpArgumentError, match="gelu mode"):
        OPS["gelu"](x=rand(3), mode="CUBIC")


@pytest.mark.parametrize("dtype,torch_dtype", [("fp16", torch.float16), ("int32", torch.int32), ("bool", torch.bool),
                                                ("fp32", torch.float32)])
def test_cast(dtype, torch_dtype):
    x = rand(3, 4) * 10
    out = run("cast", x=x, dtype=dtype)
    close(out, t(x).to(torch_dtype))
    assert out.dtype == t(x).to(torch_dtype).numpy().dtype


# -- reductions and normalization -----------------------------------------------------------------
@pytest.mark.parametrize("name,reference", [
    ("reduce_mean", torch.mean), ("reduce_sum", torch.sum), ("reduce_max", torch.amax), ("reduce_min", torch.amin),
    ("reduce_prod", None),
])
@pytest.mark.parametrize("keep_dims", [True, False])
def test_reductions(name, reference, keep_dims):
    x = rand(2, 3, 4, low=0.5, high=1.5)
    axes = np.array([-1, 1], np.int32)
    if reference is None:  # torch.prod takes one dim at a time
        expected = torch.prod(torch.prod(t(x), dim=2, keepdim=keep_dims), dim=1, keepdim=keep_dims)
    else:
        expected = reference(t(x), dim=(2, 1), keepdim=keep_dims)
    close(run(name, x=x, axes=axes, keep_dims=keep_dims), expected, rtol=1e-5)
    close(run(name, x=x), (reference or torch.prod)(t(x).reshape(-1)) if reference is not torch.mean else t(x).mean(), rtol=1e-5)


def test_softmax():
    x = rand(2, 3, 5, 7) * 10
    close(run("softmax", x=x, axis=np.int32(-1)), torch.softmax(t(x), -1), atol=1e-6)
    close(run("softmax", x=x, axis=np.int32(1)), torch.softmax(t(x), 1), atol=1e-6)


def test_layer_norm():
    x, gamma, beta = rand(2, 5, 16) * 3 + 1, rand(16), rand(16)
    out = run("layer_norm", x=x, axes=np.array([-1], np.int32), gamma=gamma, beta=beta, epsilon=np.float32(1e-6))
    close(out, F.layer_norm(t(x), (16,), t(gamma), t(beta), eps=1e-6), atol=1e-5)
    close(run("layer_norm", x=x, axes=np.array([1, 2], np.int32)), F.layer_norm(t(x), (5, 16), eps=1e-5), atol=1e-5)


def test_batch_norm():
    x, mean, var, gamma, beta = rand(2, 4, 3, 5), rand(4), rand(4, low=0.5), rand(4), rand(4)
    close(run("batch_norm", x=x, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=np.float32(1e-3)),
          F.batch_norm(t(x), t(mean), t(var), t(gamma), t(beta), eps=1e-3), atol=1e-5)
    close(run("batch_norm", x=x[..., 0], mean=mean, variance=var), F.batch_norm(t(x[..., 0]), t(mean), t(var)), atol=1e-5)


# -- linear algebra -------------------------------------------------------------------------------
def test_linear():
    x, w, b = rand(2, 7, 16), rand(24, 16), rand(24)
    close(run("linear", x=x, weight=w, bias=b), F.linear(t(x), t(w), t(b)), atol=1e-5)
    close(run("linear", x=x, weight=w), F.linear(t(x), t(w)), atol=1e-5)


@pytest.mark.parametrize("tx,ty", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul(tx, ty):
    x, y = rand(2, 3, 5, 6), rand(2, 3, 6, 4)
    if tx:
        x = np.ascontiguousarray(np.swapaxes(x, -1, -2))
    if ty:
        y = np.ascontiguousarray(np.swapaxes(y, -1, -2))
    xt, yt = t(x), t(y)
    expected = torch.matmul(xt.transpose(-1, -2) if tx else xt, yt.transpose(-1, -2) if ty else yt)
    close(run("matmul", x=x, y=y, transpose_x=np.bool_(tx), transpose_y=np.bool_(ty)), expected, atol=1e-5)


def test_scaled_dot_product_attention():
    q, k, v = rand(1, 2, 5, 8), rand(1, 2, 7, 8), rand(1, 2, 7, 8)
    close(run("scaled_dot_product_attention", query=q, key=k, value=v), F.scaled_dot_product_attention(t(q), t(k), t(v)), atol=1e-5)
    mask = rand(5, 7) > -1.0
    mask[:, 0] = True
    close(run("scaled_dot_product_attention", query=q, key=k, value=v, attn_mask=mask),
          F.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=t(mask)), atol=1e-5)
    bias = rand(5, 7)
    close(run("scaled_dot_product_attention", query=q, key=k, value=v, attn_mask=bias),
          F.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=t(bias)), atol=1e-5)


@pytest.mark.parametrize("strides,pad,dilations,groups", [
    ((1, 1), (0, 0, 0, 0), (1, 1), 1),
    ((2, 2), (1, 1, 1, 1), (1, 1), 1),
    ((16, 16), (0, 0, 0, 0), (1, 1), 1),
    ((1, 2), (2, 2, 1, 1), (2, 1), 2),
])
def test_conv(strides, pad, dilations, groups):
    x, w, b = rand(2, 4, 16, 16), rand(6, 4 // groups, 3, 3), rand(6)
    if strides == (16, 16):
        w = rand(6, 4, 16, 16)
    out = run("conv", x=x, weight=w, bias=b, strides=np.array(strides), pad_type="custom", pad=np.array(pad),
              dilations=np.array(dilations), groups=np.int32(groups))
    expected = F.conv2d(t(x), t(w), t(b), stride=strides, padding=(pad[0], pad[2]), dilation=dilations, groups=groups)
    close(out, expected, atol=1e-4)


def test_conv_pad_modes():
    x, w = rand(1, 3, 9, 9), rand(4, 3, 3, 3)
    close(run("conv", x=x, weight=w, pad_type="same"), F.conv2d(t(x), t(w), padding="same"), atol=1e-4)
    close(run("conv", x=x, weight=w, pad_type="valid"), F.conv2d(t(x), t(w)), atol=1e-4)
    # same_lower puts the odd padding pixel first: stride 2 on 9 px with a 4-wide kernel pads (2, 1)
    w4 = rand(4, 3, 4, 4)
    expected = F.conv2d(F.pad(t(x), (2, 1, 2, 1)), t(w4), stride=2)
    close(run("conv", x=x, weight=w4, pad_type="same_lower", strides=np.array([2, 2])), expected, atol=1e-4)
    with pytest.raises(OpArgumentError, match="pad_type"):
        OPS["conv"](x=x, weight=w, pad_type="reflect")


@pytest.mark.parametrize("strides,pad,dilations", [((2, 2), (0, 0, 0, 0), (1, 1)), ((2, 3), (1, 1, 0, 2), (1, 2)),
                                                   ((1, 1), (0, 0, 0, 0), (1, 1))])
def test_conv_transpose(strides, pad, dilations):
    x, w, b = rand(2, 5, 6, 7), rand(5, 3, 2, 3), rand(3)
    out = run("conv_transpose", x=x, weight=w, bias=b, strides=np.array(strides), pad_type="custom", pad=np.array(pad),
              dilations=np.array(dilations))
    # torch pads symmetrically; crop the reference's extra "after" rows for asymmetric pads
    full = F.conv_transpose2d(t(x), t(w), t(b), stride=strides, dilation=dilations)
    expected = full[:, :, pad[0]: full.shape[2] - pad[1], pad[2]: full.shape[3] - pad[3]]
    close(out, expected, atol=1e-4)
    shaped = run("conv_transpose", x=x, weight=w, strides=np.array(strides), dilations=np.array(dilations),
                 output_shape=np.array([2, 3, full.shape[2] - 1, full.shape[3] - 1]))
    assert shaped.shape == (2, 3, full.shape[2] - 1, full.shape[3] - 1)


# -- shape and data movement ------------------------------------------------------------------------
def test_shape_ops():
    x = rand(2, 3, 4)
    close(run("transpose", x=x, perm=np.array([2, 0, 1])), t(x).permute(2, 0, 1))
    close(run("reshape", x=x, shape=np.array([0, -1, 2])), t(x).reshape(2, -1, 2))
    close(run("reshape", x=x, shape=np.array([6, 4])), t(x).reshape(6, 4))
    close(run("expand_dims", x=x, axes=np.array([0, -1])), t(x)[None, ..., None])
    close(run("squeeze", x=x[:, :1, None], axes=np.array([1, 2])), t(x)[:, 0])
    close(run("squeeze", x=x[:, :1, None]), t(x)[:, 0])
    y = rand(2, 3, 4)
    close(run("concat", values=[x, y], axis=np.int32(-1)), torch.cat([t(x), t(y)], -1))
    close(run("stack", values=[x, y], axis=np.int32(1)), torch.stack([t(x), t(y)], 1))
    with pytest.raises(OpArgumentError, match="interleave"):
        OPS["concat"](values=[x, y], axis=0, interleave=True)


def test_split():
    x = rand(2, 9, 4)
    for out, ref in zip(run("split", x=x, axis=np.int32(1), num_splits=np.int32(3)), torch.chunk(t(x), 3, 1)):
        close(out, ref)
    for out, ref in zip(run("split", x=x, axis=np.int32(-2), split_sizes=np.array([2, 3, 4])), torch.split(t(x), [2, 3, 4], 1)):
        close(out, ref)


def test_slice_by_index():
    x = rand(4, 6, 5)
    out = run("slice_by_index", x=x, begin=np.array([1, 0, -3]), end=np.array([3, 6, 5]), stride=np.array([1, 2, 1]))
    close(out, t(x)[1:3, 0:6:2, -3:5])
    masked = run("slice_by_index", x=x, begin=np.array([9, 2, 0]), end=np.array([0, 0, 9]), begin_mask=np.array([True, False, False]),
                 end_mask=np.array([True, True, False]), squeeze_mask=np.array([False, False, True]))
    close(masked, t(x)[:, 2:, 0])
    close(run("slice_by_index", x=x, begin=np.array([3, 5, 4]), end=np.array([0, 0, 0]), stride=np.array([-1, -2, -1]),
              end_mask=np.array([True, True, True])), np.ascontiguousarray(x[3::-1, 5::-2, 4::-1]))


@pytest.mark.parametrize("mode", ["update", "add", "mul"])
def test_scatter(mode):
    data, updates = rand(3, 5, 4), rand(3, 2, 4)
    indices = np.array([4, 1], np.int32)
    expected = t(data).clone()
    index = torch.from_numpy(indices.astype(np.int64))
    if mode == "update":
        expected.index_copy_(1, index, t(updates))
    elif mode == "add":
        expected.index_add_(1, index, t(updates))
    else:
        expected[:, index] *= t(updates)
    close(run("scatter", data=data, indices=indices, updates=updates, axis=np.int32(1), mode=mode), expected)
    with pytest.raises(OpArgumentError, match="out of range"):
        OPS["scatter"](data=data, indices=np.array([5]), updates=updates[:, :1], axis=1, validate_indices=True)


def test_gather():
    x = rand(4, 5)
    close(run("gather", x=x, indices=np.array([3, -1, 0]), axis=np.int32(1)), t(x)[:, [3, 4, 0]])
    close(run("gather", x=x, indices=np.array([[1], [2]]), axis=np.int32(0)), t(x)[torch.tensor([[1], [2]])])


# -- compressed weights and quantized activations ---------------------------------------------------
def test_constexpr_affine_dequantize_matches_coremltools():
    from coremltools.converters.mil.mil.ops.defs.iOS16.constexpr_ops import constexpr_affine_dequantize as reference

    q = RNG.integers(-128, 127, (8, 6), dtype=np.int8)
    scale, zero = rand(8, low=0.01, high=0.1), RNG.integers(-3, 3, 8).astype(np.int8)
    close(run("constexpr_affine_dequantize", quantized_data=q, zero_point=zero, scale=scale, axis=np.int32(0)),
          reference.decompress(q, zero, scale, 0), rtol=1e-6)


def test_constexpr_blockwise_shift_scale_matches_coremltools():
    from coremltools.converters.mil.mil.ops.defs.iOS18.compression import constexpr_blockwise_shift_scale as reference

    data = RNG.integers(-128, 127, (8, 6), dtype=np.int8)
    scale, offset = rand(4, 3, low=0.01, high=0.1), RNG.integers(-3, 3, (4, 3)).astype(np.int8)
    close(run("constexpr_blockwise_shift_scale", data=data, scale=scale, offset=offset),
          reference.decompress(data, scale, offset), rtol=1e-6)
    close(run("constexpr_blockwise_shift_scale", data=data, scale=scale), reference.decompress(data, scale, None), rtol=1e-6)


@pytest.mark.parametrize("nbits", [4, 6])
def test_constexpr_lut_to_dense_ios16_matches_coremltools(nbits):
    from coremltools.converters.mil.mil.ops.defs.iOS16.constexpr_ops import constexpr_lut_to_dense as reference
    from coremltools.optimize._utils import pack_elements_into_bits

    shape = np.array([5, 7], np.uint32)
    indices = RNG.integers(0, 2**nbits, int(np.prod(shape))).astype(np.uint8)
    packed = pack_elements_into_bits(indices, nbits)
    lut = rand(2**nbits)
    close(run("constexpr_lut_to_dense", indices=packed, lut=lut, shape=shape), reference.decompress(lut, packed, shape))


def test_constexpr_lut_to_dense_ios18_matches_coremltools():
    from coremltools.converters.mil.mil.ops.defs.iOS18.compression import constexpr_lut_to_dense as reference

    indices = RNG.integers(0, 16, (6, 4)).astype(np.uint8)
    lut = rand(2, 2, 16, 1)  # 2 x 2 groups of 3 x 2 elements, 4-bit tables
    close(run("constexpr_lut_to_dense", indices=indices, lut=lut), reference.decompress(indices, lut, None))
    with pytest.raises(OpArgumentError, match="vector palettization"):
        OPS["constexpr_lut_to_dense"](indices=indices, lut=rand(1, 1, 16, 2))


def test_constexpr_cast():
    x = rand(4).astype(np.float16)
    out = run("constexpr_cast", source_val=x, output_dtype="fp32")
    assert out.dtype == np.float32 and np.array_equal(out, x.astype(np.float32))


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_quantize_dequantize_match_torch():
    x = rand(2, 3, 4)
    q = run("quantize", input=x, scale=np.float32(0.02), zero_point=np.uint8(128), output_dtype="uint8")
    expected = torch.quantize_per_tensor(t(x), 0.02, 128, torch.quint8)
    np.testing.assert_array_equal(q, expected.int_repr().numpy())
    close(run("dequantize", input=q, scale=np.float32(0.02), zero_point=np.uint8(128)), expected.dequantize(), atol=1e-6)
    scales, zeros = rand(3, low=0.01, high=0.05), np.array([0, 1, -2], np.int8)
    qc = run("quantize", input=x, scale=scales, zero_point=zeros, axis=np.int32(1), output_dtype="int8")
    expected = torch.quantize_per_channel(t(x), t(scales).double(), torch.from_numpy(zeros.astype(np.int64)), 1, torch.qint8)
    np.testing.assert_array_equal(qc, expected.int_repr().numpy())
    close(run("dequantize", input=qc, scale=scales, zero_point=zeros, axis=np.int32(1)), expected.dequantize(), atol=1e-6)


def test_executor_rounds_each_op_to_its_declared_dtype(tmp_path):
    """A two-op fp16 program: the intermediate is stored in fp16 (as Core ML would) before the next op."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 64))], opset_version=ct.target.iOS17)
    def program(x):
        x16 = mb.cast(x=x, dtype="fp16")
        y = mb.mul(x=x16, y=np.float16(1.0 / 3.0))
        return mb.cast(x=mb.add(x=y, y=y), dtype="fp32", name="out")

    mlmodel = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17, skip_model_load=True)
    mlmodel.save(str(tmp_path / "tiny.mlpackage"))
    x = rand(1, 64, low=-100, high=100)
    out = MilExecutor.from_package(tmp_path / "tiny.mlpackage").run({"x": x})["out"]
    x16 = x.astype(np.float16).astype(np.float32)
    y16 = (x16 * np.float32(np.float16(1.0 / 3.0))).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(out, (y16 + y16).astype(np.float16).astype(np.float32))


COVERED = set(BINARY) | set(UNARY) | {
    "pow", "logical_and", "logical_or", "logical_xor", "logical_not", "rsqrt", "inverse", "log", "select", "gelu", "cast",
    "reduce_mean", "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "softmax", "layer_norm", "batch_norm", "linear", "matmul",
    "scaled_dot_product_attention", "conv", "conv_transpose", "transpose", "reshape", "expand_dims", "squeeze", "concat",
    "stack", "split", "slice_by_index", "scatter", "gather", "constexpr_affine_dequantize",
    "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "constexpr_cast", "quantize", "dequantize",
}


def test_every_op_is_tested():
    """Every op the executor registers has a case in this file (add the case with the op)."""
    assert sorted(set(OPS) - COVERED) == [], "executor ops without a test case here"
