"""Oracle values for kiln's convolution and pooling, computed by an independent framework (JAX).

Each case stores random f64 inputs, the forward output, and the gradients of L = sum(y * r) for a
stored random r, so the Rust test (tests/oracle.rs) checks kiln's CPU reference forward and
backward against someone else's code. Regenerate with `make oracle` (installs JAX into a
throw-away venv); the values are committed, so the tests need no Python.

Definitions follow PyTorch's layouts (NCHW, OIHW). Transposed convolution is defined here as
the adjoint (vector-Jacobian product) of the corresponding convolution, which is what PyTorch's
ConvTranspose2d computes; JAX differentiates the convolution, kiln implements the transpose.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

jax.config.update("jax_enable_x64", True)
rng = np.random.default_rng(20261123)


def rand(*shape):
    return rng.uniform(-1.0, 1.0, size=shape)


def distinct(*shape):
    """Well-separated values (0.01 apart, shuffled): no max-pool ties."""
    n = int(np.prod(shape))
    v = (np.arange(n) - n // 2) * 0.01 + 0.005
    rng.shuffle(v)
    return v.reshape(shape)


def conv(x, w, stride, padding, dilation, groups):
    return lax.conv_general_dilated(
        x, w, window_strides=stride, padding=padding, rhs_dilation=dilation,
        dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups)


def tensor(a):
    a = np.asarray(a, dtype=np.float64)
    return {"shape": list(a.shape), "data": a.reshape(-1).tolist()}


def with_grads(f, inputs):
    """Output of f and the gradients of sum(f * r) w.r.t. every input."""
    y = f(*inputs)
    r = rand(*y.shape)
    grads = jax.grad(lambda *a: jnp.sum(f(*a) * r), argnums=tuple(range(len(inputs))))(*inputs)
    return y, r, grads


cases = []


def add(name, op, params, names, inputs, f):
    y, r, grads = with_grads(f, [jnp.asarray(a) for a in inputs])
    cases.append({
        "name": name, "op": op, "params": params,
        "inputs": {n: tensor(a) for n, a in zip(names, inputs)},
        "weights": tensor(r), "output": tensor(y),
        "grads": {n: tensor(g) for n, g in zip(names, grads)},
    })


def conv_case(name, x_shape, k, kernel, stride, pad, dilation, groups):
    """pad = ((top, bottom), (left, right))."""
    c = x_shape[1]
    x, w, b = rand(*x_shape), rand(k, c // groups, *kernel), rand(k)
    f = lambda x, w, b: conv(x, w, stride, pad, dilation, groups) + b[None, :, None, None]
    params = {"kernel": kernel, "stride": stride, "padding": [pad[0][0], pad[1][0]],
              "padding_end": [pad[0][1], pad[1][1]], "dilation": dilation, "groups": groups}
    add(name, "conv2d", params, ["x", "w", "b"], [x, w, b], f)


conv_case("conv stride 2 pad 1", [2, 3, 7, 9], 4, [3, 3], [2, 2], ((1, 1), (1, 1)), [1, 1], 1)
conv_case("conv dilation 2 pad 2", [1, 2, 9, 8], 3, [3, 3], [1, 1], ((2, 2), (2, 2)), [2, 2], 1)
conv_case("conv rectangular stride 3x1", [2, 2, 8, 5], 3, [2, 3], [3, 1], ((0, 0), (1, 1)), [1, 1], 1)
conv_case("conv same even kernel", [1, 3, 6, 7], 2, [2, 4], [1, 1], ((0, 1), (1, 2)), [1, 1], 1)
conv_case("conv groups 2", [2, 4, 6, 7], 6, [3, 3], [1, 1], ((1, 1), (1, 1)), [1, 1], 2)
conv_case("conv depthwise stride 2", [1, 3, 7, 9], 3, [3, 3], [2, 2], ((1, 1), (1, 1)), [1, 1], 3)
conv_case("conv depthwise multiplier 2 dilated", [2, 2, 7, 7], 4, [3, 3], [1, 1], ((2, 2), (2, 2)), [2, 2], 2)


def conv_transpose_case(name, x_shape, c_out, kernel, stride, pad, dilation, output_padding, groups):
    """PyTorch ConvTranspose2d: x [N, C_in, H, W], w [C_in, C_out/groups, KH, KW]."""
    n, c_in, h, wd = x_shape
    out_h = (h - 1) * stride[0] - 2 * pad[0] + dilation[0] * (kernel[0] - 1) + output_padding[0] + 1
    out_w = (wd - 1) * stride[1] - 2 * pad[1] + dilation[1] * (kernel[1] - 1) + output_padding[1] + 1
    x, w, b = rand(*x_shape), rand(c_in, c_out // groups, *kernel), rand(c_out)
    # The convolution whose adjoint this is maps [N, C_out, out_h, out_w] to x's shape (its output
    # size floors, so the output_padding rows at the bottom/right are never read: zero gradient).
    conv_pad = ((pad[0], pad[0]), (pad[1], pad[1]))

    def f(x, w, b):
        zeros = jnp.zeros((n, c_out, out_h, out_w))
        _, vjp = jax.vjp(lambda t: conv(t, w, stride, conv_pad, dilation, groups), zeros)
        return vjp(x)[0] + b[None, :, None, None]

    params = {"kernel": kernel, "stride": stride, "padding": pad, "dilation": dilation,
              "output_padding": output_padding, "groups": groups}
    add(name, "conv_transpose2d", params, ["x", "w", "b"], [x, w, b], f)


conv_transpose_case("conv_transpose stride 2 output_padding 1", [2, 3, 4, 5], 2, [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 1)
conv_transpose_case("conv_transpose stride 1 pad 0", [1, 2, 3, 4], 3, [2, 2], [1, 1], [0, 0], [1, 1], [0, 0], 1)
conv_transpose_case("conv_transpose groups 2 dilation 2", [1, 4, 4, 3], 4, [3, 2], [2, 1], [1, 0], [2, 1], [1, 0], 2)


def pool_params(kernel, stride, pad):
    return {"kernel": kernel, "stride": stride, "padding": pad}


def window(f_init, op, x, kernel, stride, pad):
    return lax.reduce_window(x, f_init, op, (1, 1, *kernel), (1, 1, *stride),
                             ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))


def pool_case(name, kind, x, kernel, stride, pad, **extra):
    def f(x):
        if kind == "max_pool2d":
            return window(-jnp.inf, lax.max, x, kernel, stride, pad)
        if kind == "avg_pool2d":
            sums = window(0.0, lax.add, x, kernel, stride, pad)
            if extra["count_include_pad"]:
                return sums / (kernel[0] * kernel[1])
            return sums / window(0.0, lax.add, jnp.ones_like(x), kernel, stride, pad)
        if kind == "l2_pool2d":
            return jnp.sqrt(window(0.0, lax.add, x * x, kernel, stride, pad))
        raise ValueError(kind)

    add(name, kind, {**pool_params(kernel, stride, pad), **extra}, ["x"], [x], f)


pool_case("max 2x2 stride 2", "max_pool2d", distinct(2, 3, 6, 7), [2, 2], [2, 2], [0, 0])
pool_case("max overlapping 3x3 stride 2 pad 1", "max_pool2d", distinct(2, 2, 7, 9), [3, 3], [2, 2], [1, 1])
pool_case("avg 3x3 stride 2 pad 1 counting padding", "avg_pool2d", rand(2, 2, 7, 9), [3, 3], [2, 2], [1, 1], count_include_pad=True)
pool_case("avg 3x3 stride 2 pad 1 not counting padding", "avg_pool2d", rand(2, 2, 7, 9), [3, 3], [2, 2], [1, 1], count_include_pad=False)
pool_case("avg 2x3 stride 3x2", "avg_pool2d", rand(1, 3, 8, 7), [2, 3], [3, 2], [0, 0], count_include_pad=True)
pool_case("l2 3x3 stride 2 pad 1", "l2_pool2d", rand(2, 2, 7, 9) + 0.0, [3, 3], [2, 2], [1, 1])
pool_case("l2 2x2 stride 2", "l2_pool2d", rand(1, 3, 6, 5), [2, 2], [2, 2], [0, 0])
add("global average", "global_avg_pool2d", {}, ["x"], [rand(3, 4, 5, 3)], lambda x: jnp.mean(x, axis=(2, 3), keepdims=True))

json.dump({"generator": "tests/oracle/generate.py", "jax": jax.__version__, "cases": cases},
          sys.stdout, indent=None, separators=(",", ":"))
