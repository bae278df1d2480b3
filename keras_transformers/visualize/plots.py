"""Attention pictures: heat maps per head and layer, one token's attention, image attention.

Drawn with matplotlib's object API (no pyplot: no global state, no display needed) and
saved as PNG. `plot_token_attention` draws the Tensor2Tensor visualisation of Vaswani et
al. (2017), figures 3-5 (the "it_" picture of the Google AI blog post).
"""

import math
import os

import numpy as np

# One colour per head, as the Tensor2Tensor visualisation (matplotlib's tab10 cycle).
HEAD_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(figure, path):
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"`path` must be a file path. Received: path={path!r}")
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    figure.savefig(path, dpi=100)
    return figure


def token_labels(tokens):
    """Printable labels for tokens: whitespace made visible ("\\n", "␣")."""
    return [str(t).replace("\n", "\\n").replace(" ", "␣") or "∅" for t in tokens]


def _check_tokens(tokens, length, name, axis):
    if tokens is None:
        return [str(i) for i in range(length)]
    tokens = list(tokens)
    if len(tokens) != length:
        raise ValueError(
            f"`{name}` must have one token per {axis} position ({length}). "
            f"Received: {name} with {len(tokens)} tokens"
        )
    return token_labels(tokens)


def _as_heads(scores, name="scores"):
    scores = np.asarray(scores, "float32")
    if scores.ndim == 2:
        scores = scores[None]
    if scores.ndim != 3:
        raise ValueError(
            f"`{name}` must be (num_heads, T, S) or (T, S) for one example and one layer. "
            f"Received: {name} with shape={scores.shape}"
        )
    return scores


def _ticks(axis, labels, which, every_label):
    positions = range(0, len(labels), every_label)
    if which == "x":
        axis.set_xticks(list(positions), [labels[i] for i in positions], rotation=90, fontsize=7)
    else:
        axis.set_yticks(list(positions), [labels[i] for i in positions], fontsize=7)


def _heat_map(axis, values, query_labels, key_labels, title, x_ticks=True, y_ticks=True):
    image = axis.imshow(values, cmap="viridis", vmin=0.0, aspect="auto", interpolation="nearest")
    axis.set_title(title, fontsize=8)
    # At most ~40 labels per axis: every k-th token beyond that.
    if x_ticks:
        _ticks(axis, key_labels, "x", max(1, math.ceil(len(key_labels) / 40)))
    else:
        axis.set_xticks([])
    if y_ticks:
        _ticks(axis, query_labels, "y", max(1, math.ceil(len(query_labels) / 40)))
    else:
        axis.set_yticks([])
    return image


def plot_attention(scores, query_tokens, key_tokens, path, title=None):
    """Draws one layer's attention as a grid of heat maps, one per head.

    Rows are queries, columns keys, colour the attention probability (0 to the
    largest value of each head).

    Args:
        scores: (num_heads, T, S) or (T, S) probabilities of one example, e.g.
            `attention_scores(model, inputs)[name][0]`.
        query_tokens: T labels for the rows (strings or ids), or None for
            positions.
        key_tokens: S labels for the columns, or None for positions; the source
            tokens for a cross-attention.
        path: the PNG file to write (folders are created).
        title: the figure's title.

    Returns:
        The matplotlib `Figure`, already saved to `path`.

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> scores = np.full((2, 3, 3), 1 / 3, "float32")
    >>> path = os.path.join(tempfile.mkdtemp(), "attention.png")
    >>> figure = plot_attention(scores, list("abc"), list("abc"), path, title="layer 0")
    >>> os.path.getsize(path) > 0, len(figure.axes)
    (True, 2)
    """
    scores = _as_heads(scores)
    num_heads, query_length, key_length = scores.shape
    query_labels = _check_tokens(query_tokens, query_length, "query_tokens", "query")
    key_labels = _check_tokens(key_tokens, key_length, "key_tokens", "key")
    columns = min(num_heads, 4)
    rows = math.ceil(num_heads / columns)
    cell = min(6.0, max(2.5, 0.18 * max(query_length, key_length)))
    figure = _figure(cell * columns, cell * rows + (0.4 if title else 0))
    axes = figure.subplots(rows, columns, squeeze=False)
    for head in range(rows * columns):
        axis = axes[head // columns][head % columns]
        if head >= num_heads:
            axis.set_axis_off()
            continue
        _heat_map(axis, scores[head], query_labels, key_labels, f"head {head}")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_attention_maps(scores, query_tokens, key_tokens, path, example=0, title=None):
    """Draws every layer and head: one row per layer, one column per head.

    Args:
        scores: a dict from layer name to (B, num_heads, T, S) probabilities, as
            `attention_scores` returns (pass a sub-dict to draw some layers only,
            e.g. the cross-attentions with the source tokens as `key_tokens`).
            Every layer must have the same T and S.
        query_tokens: T labels for the rows, or None for positions.
        key_tokens: S labels for the columns, or None for positions.
        path: the PNG file to write.
        example: which example of the batch to draw.
        title: the figure's title.

    Returns:
        The matplotlib `Figure`, already saved to `path`.

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> scores = {"block_0": np.full((1, 2, 3, 3), 1 / 3, "float32"),
    ...           "block_1": np.full((1, 2, 3, 3), 1 / 3, "float32")}
    >>> path = os.path.join(tempfile.mkdtemp(), "maps.png")
    >>> figure = plot_attention_maps(scores, list("abc"), list("abc"), path)
    >>> len(figure.axes)
    4
    """
    if not isinstance(scores, dict) or not scores:
        raise ValueError(
            "`scores` must be a non-empty dict from layer name to (B, num_heads, T, S) "
            f"arrays, as attention_scores returns. Received: scores of type {type(scores).__name__}"
        )
    layers = {}
    for name, value in scores.items():
        value = np.asarray(value, "float32")
        if value.ndim != 4:
            raise ValueError(
                f"`scores[{name!r}]` must be (B, num_heads, T, S). "
                f"Received: an array with shape={value.shape}"
            )
        if not 0 <= example < value.shape[0]:
            raise ValueError(
                f"`example` must index the batch of {value.shape[0]}. Received: example={example!r}"
            )
        layers[name] = value[example]
    shapes = {value.shape[1:] for value in layers.values()}
    if len(shapes) != 1:
        raise ValueError(
            "Every layer in `scores` must have the same (T, S): draw self- and "
            f"cross-attention separately. Received: shapes {sorted(shapes)}"
        )
    (query_length, key_length), = shapes
    query_labels = _check_tokens(query_tokens, query_length, "query_tokens", "query")
    key_labels = _check_tokens(key_tokens, key_length, "key_tokens", "key")
    rows = len(layers)
    columns = max(value.shape[0] for value in layers.values())
    cell = min(4.0, max(2.0, 0.12 * max(query_length, key_length)))
    figure = _figure(cell * columns, cell * rows + (0.4 if title else 0))
    axes = figure.subplots(rows, columns, squeeze=False)
    for row, (name, value) in enumerate(layers.items()):
        for head in range(columns):
            axis = axes[row][head]
            if head >= value.shape[0]:
                axis.set_axis_off()
                continue
            _heat_map(
                axis,
                value[head],
                query_labels,
                key_labels,
                # The layer's name once per row: repeated, long names run into each other.
                f"{name}\nhead {head}" if head == 0 else f"head {head}",
                x_ticks=row == rows - 1,
                y_ticks=head == 0,
            )
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_token_attention(scores, tokens, query_index, path, key_tokens=None, title=None):
    """Draws what one token attends to, one colour per head (Tensor2Tensor's picture).

    The query tokens are listed on the left, the key tokens on the right; from
    the chosen query token a line runs to every key, one per head, as opaque as
    its attention probability, and beside each key one coloured box per head
    shows the same probability. This is the picture of "it_" attending to "The_
    animal_" in Vaswani et al. (2017) and its blog post.

    Args:
        scores: (num_heads, T, S) or (T, S) probabilities of one example and
            one layer.
        tokens: T labels of the query tokens (the keys too, unless `key_tokens`).
        query_index: the query position to draw (negative counts from the end).
        path: the PNG file to write.
        key_tokens: S labels of the key tokens (a cross-attention's source).
        title: the figure's title.

    Returns:
        The matplotlib `Figure`, already saved to `path`.

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> scores = np.random.default_rng(0).dirichlet(np.ones(4), size=(2, 4))
    >>> path = os.path.join(tempfile.mkdtemp(), "it.png")
    >>> _ = plot_token_attention(scores, ["The_", "animal_", "was_", "it_"], -1, path)
    >>> os.path.getsize(path) > 0
    True
    """
    scores = _as_heads(scores)
    num_heads, query_length, key_length = scores.shape
    query_labels = _check_tokens(tokens, query_length, "tokens", "query")
    key_labels = query_labels if key_tokens is None else _check_tokens(
        key_tokens, key_length, "key_tokens", "key"
    )
    if key_tokens is None and key_length != query_length:
        raise ValueError(
            "`key_tokens` is required when the keys are not the query tokens. "
            f"Received: scores with shape={scores.shape} and key_tokens=None"
        )
    if not isinstance(query_index, (int, np.integer)) or not -query_length <= query_index < query_length:
        raise ValueError(
            f"`query_index` must be an int in [-{query_length}, {query_length}). "
            f"Received: query_index={query_index!r}"
        )
    query_index = int(query_index) % query_length
    height = max(3.0, 0.28 * max(query_length, key_length))
    figure = _figure(5.0 + 0.25 * num_heads, height)
    axis = figure.subplots()
    axis.set_xlim(-0.2, 3.2 + 0.12 * num_heads)
    axis.set_ylim(max(query_length, key_length), -1)
    axis.set_axis_off()
    for i, label in enumerate(query_labels):
        weight = "bold" if i == query_index else "normal"
        axis.text(0.9, i, label, ha="right", va="center", fontsize=9, fontweight=weight)
    for j, label in enumerate(key_labels):
        axis.text(2.1, j, label, ha="left", va="center", fontsize=9)
    for head in range(num_heads):
        color = HEAD_COLORS[head % len(HEAD_COLORS)]
        row = scores[head, query_index]
        peak = max(float(row.max()), 1e-9)
        for j in range(key_length):
            alpha = float(row[j]) / peak
            axis.plot([1.0, 2.0], [query_index, j], color=color, alpha=alpha * 0.8, linewidth=1.5)
            axis.add_patch(
                _rectangle(3.0 + 0.12 * head, j - 0.4, 0.1, 0.8, color, float(row[j]) / peak)
            )
    axis.text(
        3.0, -0.8, " ".join(f"h{h}" for h in range(num_heads)), fontsize=6, va="bottom"
    )
    figure.suptitle(title or f"attention of {query_labels[query_index]!r} (one colour per head)")
    return _save(figure, path)


def _rectangle(x, y, width, height, color, alpha):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), width, height, facecolor=color, alpha=min(1.0, max(0.0, alpha)))


def plot_image_attention(image, attention, path, titles=None, title=None):
    """Draws an image beside attention maps over its patches, upsampled onto it.

    For ViT: the class token's attention over the patches (a row of
    `attention_scores`, or of `attention_rollout`) reshaped to the patch grid.

    Args:
        image: (H, W) or (H, W, C) pixels, any range.
        attention: (h, w) or (num_maps, h, w) attention over the patch grid;
            H and W must be multiples of h and w.
        path: the PNG file to write.
        titles: one title per map.
        title: the figure's title.

    Returns:
        The matplotlib `Figure`, already saved to `path`.

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "image.png")
    >>> _ = plot_image_attention(np.zeros((8, 8)), np.eye(2)[None], path, titles=["head 0"])
    >>> os.path.getsize(path) > 0
    True
    """
    image = np.asarray(image, "float32")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3):
        raise ValueError(f"`image` must be (H, W) or (H, W, C). Received: image with shape={image.shape}")
    attention = np.asarray(attention, "float32")
    if attention.ndim == 2:
        attention = attention[None]
    if attention.ndim != 3 or image.shape[0] % attention.shape[1] or image.shape[1] % attention.shape[2]:
        raise ValueError(
            "`attention` must be (h, w) or (num_maps, h, w) with h and w dividing the image "
            f"size {image.shape[:2]}. Received: attention with shape={attention.shape}"
        )
    titles = list(titles) if titles is not None else [f"map {i}" for i in range(len(attention))]
    if len(titles) != len(attention):
        raise ValueError(
            f"`titles` must have one title per map ({len(attention)}). Received: {len(titles)} titles"
        )
    scale = (image.shape[0] // attention.shape[1], image.shape[1] // attention.shape[2])
    shown = image if image.ndim == 2 else (image - image.min()) / max(float(np.ptp(image)), 1e-9)
    figure = _figure(2.2 * (len(attention) + 1), 2.4 + (0.3 if title else 0))
    axes = figure.subplots(1, len(attention) + 1, squeeze=False)[0]
    axes[0].imshow(shown, cmap="gray" if image.ndim == 2 else None)
    axes[0].set_title("input", fontsize=8)
    for axis, values, map_title in zip(axes[1:], attention, titles):
        upsampled = np.kron(values, np.ones(scale))  # (H, W)
        axis.imshow(shown, cmap="gray" if image.ndim == 2 else None)
        axis.imshow(upsampled, cmap="inferno", alpha=0.6)
        axis.set_title(map_title, fontsize=8)
    for axis in axes:
        axis.set_axis_off()
    if title:
        figure.suptitle(title)
    return _save(figure, path)
