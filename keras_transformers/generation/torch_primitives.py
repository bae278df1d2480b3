"""One cached decoding step and the token loop in plain PyTorch: `primitives.py`'s functions.

On the torch backend `generate.py` runs its decoding step on these instead of
`keras.ops`: Keras converts and checks every argument of every op (about 20 us an
op), which made a small model's step cost several milliseconds of Python, while a
PyTorch op costs a few microseconds. Same functions, arguments and results (up to
float rounding) as `primitives.py` (softmax in float32, layer normalization in at
least float32, as Keras computes them); `dense` lays the weights out for PyTorch
(one matmul for a block's query, key and value; on a CPU, oneDNN's blocked layout,
or one block of columns per thread for a single row). The cache is written in
place (`index_copy_`), as `backend.write_positions` does on PyTorch. Runs eagerly or
under `torch.compile`. `token_loop` is `samplers.token_loop` as a Python loop (a
keras.ops loop costs about 20 ops of dispatch per token). Imported only on the torch
backend (`generate._primitives`).
"""

import math
import typing

import torch
import torch.nn.functional as F
from keras import ops


def _tensor(x, dtype="int32"):
    """`x` as is if a torch tensor, else a tensor on Keras' device: a caller may pass
    host arrays, as keras.ops accepts them."""
    return x if isinstance(x, torch.Tensor) else ops.convert_to_tensor(x, dtype)


def positions(token_ids, index):
    """The positions index .. index + T - 1 of `token_ids` (B, T): int64 (T,).

    Example:

    >>> positions(torch.zeros((2, 3), dtype=torch.int32), 4).tolist()
    [4, 5, 6]
    """
    if not isinstance(index, torch.Tensor):
        index = int(index)
    # A tensor index stays on the device: no host sync, and traceable by torch.compile.
    return torch.arange(token_ids.shape[1], device=_tensor(token_ids).device) + index


def causal_mask(positions, length):
    """(T, L) bool: query position t may attend to cache positions <= positions[t].

    Example:

    >>> causal_mask(torch.tensor([1]), 3).tolist()
    [[True, True, False]]
    """
    return torch.arange(length, device=positions.device)[None, :] <= positions[:, None]


def take(table, indices, axis=0):
    """`table`'s slices at `indices` along `axis` (an embedding lookup on axis 0)."""
    if axis == 0:
        return F.embedding(_tensor(indices), table)
    return torch.index_select(table, axis, _tensor(indices))


class Dense(typing.NamedTuple):
    """The weights of a Dense projection, or of several that read the same input
    fused into one matmul (the kernels side by side): what `dense` returns and
    `project` / `project_heads` read."""

    kernel: torch.Tensor  # (in, out), row-major
    bias: torch.Tensor | None  # (out,)
    sizes: tuple  # the output width of each fused projection
    packed: torch.Tensor | None  # the (out, in) kernel in oneDNN's blocked layout, or None
    split: tuple | None = None  # one-row layout: kernel (C, in, out / C), bias (C, 1, out / C)


def _cpu_float32(kernel):
    return kernel.device.type == "cpu" and kernel.dtype == torch.float32


def _onednn():
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_reorder_linear_weight"
    )


def dense(*weights, rows=None):
    """`Dense` weights for `project`, from one or more (kernel (in, out), bias or None).

    Several projections of the same input (a block's query, key and value) become
    one (in, sum of outs) matmul: one weight stream and one call instead of three.
    The kernel is made row-major: the tied output kernel arrives as the (V, D)
    embedding's transposed view, through which the logits product streamed 8 MB at
    about 7 GB/s on a 2-core CPU (1.1 ms a token; 0.4 ms from a row-major copy).

    `rows` is the number of rows a decoding step feeds (batch x beams), or None
    (under torch.compile, which cannot trace oneDNN's tensors). With more than one
    row on a CPU, in float32, the kernel is also reordered once into oneDNN's
    blocked layout (`torch.ops.mkldnn`, what torch.compile's CPU backend uses for
    frozen weights): torch's own float32 matmul (MKL) ran a 4-layer, width-256
    GPT-2's batch-8 step about 2.4x slower on this AMD CPU (3.1 vs 1.3 ms of
    matmuls). With one row, the product is a matrix-vector product that reads
    every weight once and is bound by memory, and MKL runs it on one thread: the
    kernel is instead split by output columns into one (in, out / C) block per
    thread, stored as a (C, in, out / C) batch that `torch.bmm` spreads over the C
    threads (each column's dot product is unchanged). On 2 cores a step's matmuls
    took 1.2 instead of 1.8 ms. These copies are made once per model and batch
    size, not per call: `generate._step_weights` keeps them until a weight changes.

    Example:

    >>> kernel, bias = torch.ones((2, 3)), torch.zeros(3)
    >>> fused = dense((kernel, bias), (kernel[:, :1], None))
    >>> tuple(fused.kernel.shape), fused.bias.tolist(), fused.sizes
    ((2, 4), [0.0, 0.0, 0.0, 0.0], (3, 1))
    """
    kernels = [kernel.detach() for kernel, _ in weights]
    sizes = tuple(int(kernel.shape[1]) for kernel in kernels)
    kernel = torch.cat(kernels, dim=1) if len(kernels) > 1 else kernels[0].contiguous()
    bias = None
    if any(bias is not None for _, bias in weights):
        bias = torch.cat([
            kernel.new_zeros(size) if bias is None else bias.detach().reshape(-1)
            for (_, bias), size in zip(weights, sizes)
        ])
    packed = split = None
    if isinstance(rows, int) and rows > 1 and _cpu_float32(kernel) and _onednn():
        packed = torch.ops.mkldnn._reorder_linear_weight(kernel.t().contiguous(), rows)
    chunks = torch.get_num_threads()
    if rows == 1 and _cpu_float32(kernel) and chunks > 1 and kernel.shape[1] % chunks == 0:
        columns = kernel.shape[1] // chunks
        split = (
            kernel.view(kernel.shape[0], chunks, columns).permute(1, 0, 2).contiguous(),
            None if bias is None else bias.view(chunks, 1, columns),
        )
    return Dense(kernel, bias, sizes, packed, split)


def project(x, weights, heads=None):
    """x (B, T, in) times the `Dense` kernel, plus the bias; split into `heads` if given.

    Example:

    >>> weights = dense((torch.ones((2, 4)), torch.arange(4.0)))
    >>> tuple(project(torch.ones((1, 3, 2)), weights, heads=2).shape)
    (1, 3, 2, 2)
    """
    if weights.packed is not None:
        y = torch.ops.mkldnn._linear_pointwise(x, weights.packed, weights.bias, "none", [], "")
    elif weights.split is not None:
        kernel, bias = weights.split
        rows = x.reshape(1, -1, x.shape[-1]).expand(kernel.shape[0], -1, -1)
        y = torch.bmm(rows, kernel) if bias is None else torch.baddbmm(bias, rows, kernel)
        y = y.transpose(0, 1).reshape(*x.shape[:-1], -1)
    else:
        rows = x.reshape(-1, x.shape[-1])
        if weights.bias is None:
            y = torch.mm(rows, weights.kernel)
        else:
            y = torch.addmm(weights.bias, rows, weights.kernel)  # one fused matmul and bias
        y = y.view(*x.shape[:-1], y.shape[-1])
    if heads is None:
        return y
    return y.view(x.shape[0], x.shape[1], heads, -1)  # (B, T, N, H)


def project_heads(x, weights, heads):
    """Each projection fused in `weights` (from `dense`) of x (B, T, in), split into
    heads: a tuple of (B, T, N, H), in `dense`'s order, from one matmul.

    Example:

    >>> weights = dense((torch.ones((2, 4)), None), (torch.ones((2, 2)), None))
    >>> [tuple(part.shape) for part in project_heads(torch.ones((1, 3, 2)), weights, 2)]
    [(1, 3, 2, 2), (1, 3, 2, 1)]
    """
    parts = torch.split(project(x, weights), weights.sizes, dim=-1)
    return tuple(part.view(x.shape[0], x.shape[1], heads, -1) for part in parts)


def layer_norm(x, weights, epsilon):
    """Layer normalization over the last axis, computed in at least float32 (as Keras)."""
    gamma, beta = weights
    if x.dtype in (torch.float16, torch.bfloat16):
        y = F.layer_norm(x.float(), x.shape[-1:], gamma.float(), beta.float(), epsilon)
        return y.to(x.dtype)
    return F.layer_norm(x, x.shape[-1:], gamma, beta, epsilon)


def activation(x, name):
    """The feedforward activation of a block: "relu", "gelu" or "gelu_approximate"."""
    if name == "relu":
        return torch.relu(x)
    return F.gelu(x, approximate="tanh" if name == "gelu_approximate" else "none")


def write_heads(cache, values, index, positions):
    """The (B, N, L, H) `cache`, with `values` (B, T, N, H) written in place at `positions`.

    `index` (the first position) is unused here; `primitives.write_heads` takes it.
    """
    return cache.index_copy_(2, positions, values.transpose(1, 2).to(cache.dtype))


def attend(query, keys, values, mask, key_dim, output_weights):
    """softmax(Q K^T / sqrt(d)) V, then W^O: (B, T, D).

    query (B, T, N, H); keys, values (B, N, S, H); mask broadcastable to (B, N, T, S),
    True = may attend.
    """
    # Three-dimensional bmm on (B * N)-row views of the contiguous caches: the same
    # products as a 4-D matmul, with a third of its dispatches (a token at a time,
    # dispatch is a third of a small model's step).
    batch, length, heads, size = query.shape
    span = keys.shape[2]
    query = query.transpose(1, 2).reshape(batch * heads, length, size)
    keys = keys.reshape(batch * heads, span, size)
    if query.dtype != torch.float32:  # scores and softmax in float32
        query, keys = query.float(), keys.float()
    scores = torch.bmm(query, keys.transpose(1, 2)).view(batch, heads, length, span)
    # -1e9, not -inf: a fully masked row stays finite.
    scores = torch.where(mask, scores / math.sqrt(key_dim), -1e9)  # (B, N, T, S)
    probabilities = torch.softmax(scores, dim=-1)
    if probabilities.dtype != values.dtype:
        probabilities = probabilities.to(values.dtype)
    context = torch.bmm(
        probabilities.view(batch * heads, length, span), values.reshape(batch * heads, span, -1)
    )
    context = context.view(batch, heads, length, -1).transpose(1, 2).reshape(batch, length, -1)
    return project(context, output_weights)  # (B, T, D)


def cross_attend(query, keys, values, encoder_mask, key_dim, output_weights):
    """`attend` over a source with padding mask (B, S) bool: (B, T, D).

    A source with no real token gives zeros, as MultiHeadAttention does.
    """
    output = attend(query, keys, values, encoder_mask[:, None, None, :], key_dim, output_weights)
    return torch.where(encoder_mask.any(dim=1)[:, None, None], output, 0.0)


def next_logits(x, output_weights):
    """float32 logits (B, V) of the first position of x (B, T, D)."""
    return project(x[:, 0].to(output_weights.kernel.dtype), output_weights).float()


def token_loop(
    next_fn, token_ids, padding_mask, cache, start_index, stop_token_ids=None, next_token=None
):
    """`samplers.token_loop` as a Python loop of PyTorch ops: same arguments, same results.

    The position is a Python int (the buffers are written in place, no `slice_update`
    copies); `next_fn` and `next_token` get it as an int32 device tensor, as from the
    keras.ops loop (a compiled step sees an input, not a new constant per position).
    The host reads the device once per step only with `stop_token_ids`, to end early.
    `next_token=None` is greedy.

    Example (a "model" that always predicts the token after the current one):

    >>> def next_fn(token_ids, cache, index):
    ...     return F.one_hot(token_ids[:, 0].long() + 1, 10).float(), cache
    >>> token_ids = torch.tensor([[3, 0, 0, 0], [5, 6, 0, 0]], dtype=torch.int32)
    >>> tokens, mask = token_loop(next_fn, token_ids, token_ids > 0, (), 1, stop_token_ids=(5,))
    >>> tokens.tolist(), mask.int().tolist()
    ([[3, 4, 5, 0], [5, 6, 7, 8]], [[1, 1, 1, 0], [1, 1, 1, 1]])
    """
    prompt_mask = _tensor(padding_mask, "bool").bool()
    token_ids = torch.where(prompt_mask, _tensor(token_ids).int(), 0)
    mask = prompt_mask.clone()
    batch_size, length = token_ids.shape
    device = token_ids.device
    start_index = int(start_index)
    # The position fed to `next_fn`, an int32 device scalar as in the keras loop.
    position = torch.tensor(start_index - 1, dtype=torch.int32, device=device)
    stops = None
    if stop_token_ids:
        stops = torch.tensor(list(stop_token_ids), dtype=torch.int32, device=device)
        done = torch.zeros((batch_size,), dtype=torch.bool, device=device)
    for index in range(start_index, length):
        if stops is not None and bool(done.all()):
            break
        logits, cache = next_fn(token_ids[:, index - 1 : index], cache, position)
        position = position + 1  # == index
        if next_token is None:
            tokens = torch.argmax(logits, dim=-1).int()  # (B,)
        else:
            tokens = torch.as_tensor(next_token(logits, position)).int()
        in_prompt = prompt_mask[:, index]
        tokens = torch.where(in_prompt, token_ids[:, index], tokens)
        if stops is not None:
            tokens = torch.where(done, 0, tokens)
            mask[:, index] = in_prompt | ~done
            done = done | (~in_prompt & (tokens[:, None] == stops).any(dim=-1))
        else:
            mask[:, index] = True  # no row can stop
        token_ids[:, index] = tokens
    return token_ids, mask
