"""ViT: a pre-norm Transformer encoder over image patches, with a classification head.

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition
at Scale" (2021).
"""

import keras
from keras import ops

from keras_transformers.layers.arguments import (
    check_choice,
    check_positive_float,
    check_positive_int,
    check_rate,
)
from keras_transformers.layers.dropout import Dropout
from keras_transformers.layers.patch_embedding import PatchEmbedding
from keras_transformers.layers.transformer_encoder_block import TransformerEncoderBlock
from keras_transformers.models.model import Model

INPUT_NAMES = ("images",)
POOLINGS = ("token", "mean")


def vit(
    image_size,
    patch_size,
    num_layers,
    num_heads,
    hidden_dim,
    intermediate_dim,
    num_classes=1000,
    num_channels=3,
    dropout=0.0,
    layer_norm_epsilon=1e-6,
    pooling="token",
    dtype=None,
    name="vit",
):
    """Builds the Vision Transformer as a functional model.

    images -> patch embeddings + class token + learned positions (equation 1)
    -> dropout -> `num_layers` pre-norm encoder blocks (exact GELU; equations 2-3)
    -> final LayerNorm -> a Dense head on the class token (equation 4), or on the
    mean of the patch tokens with `pooling="mean"`. With the class-token head, the
    last block computes the class token alone (`output_length=1`; every token is
    still a key and value): the same logits for about 1 / num_layers less work, so
    its output and the final LayerNorm's are (B, 1, hidden_dim). For the whole
    sequence, build the model with `num_classes=None`.

    Resolution: the model's input is (None, None, num_channels), so images of any
    height and width that are multiples of `patch_size` run; at a resolution
    other than `image_size` the learned position table is resized by bicubic
    interpolation, class-token position kept (section 3.2; see
    `layers.PatchEmbedding`). Hugging Face's `interpolate_pos_encoding=True`
    gives the same outputs.

    Args:
        image_size: int or (height, width) the position table is learned for.
        patch_size: int or (height, width) of a patch; must divide `image_size`.
        num_layers: number of encoder blocks.
        num_heads: attention heads per block; must divide `hidden_dim`.
        hidden_dim: size of every hidden state.
        intermediate_dim: hidden size of the feed-forward networks (MLP).
        num_classes: size of the classification head; None for no head, the
            model then returns the whole normalized sequence.
        num_channels: channels of the input images.
        dropout: dropout rate after the embeddings, on the attention
            probabilities and on each sub-layer's output.
        layer_norm_epsilon: epsilon of every layer normalization.
        pooling: "token" (the class token, the paper) or "mean" (the mean of the
            patch tokens, the paper's "global average pooling" variant, section
            D.3); unused when `num_classes` is None.
        dtype: dtype policy of every layer (default: the global policy).
        name: model name.

    Model inputs (a dict):
        images: float32 (B, H, W, num_channels), channels-last; H and W
            multiples of `patch_size`. Pixel scaling is the caller's (Hugging
            Face checkpoints expect (pixel / 255 - 0.5) / 0.5).

    Returns:
        A `keras.Model` whose output is the float32 (B, num_classes) logits, or,
        with `num_classes=None`, the (B, N + 1, hidden_dim) sequence (class token
        first) in the compute dtype.

    Example:

    >>> import numpy as np
    >>> model = vit(image_size=16, patch_size=8, num_layers=1, num_heads=2,
    ...             hidden_dim=8, intermediate_dim=16, num_classes=3)
    >>> tuple(model({"images": np.zeros((2, 16, 16, 3), "float32")}).shape)
    (2, 3)
    >>> tuple(model({"images": np.zeros((1, 24, 32, 3), "float32")}).shape)  # interpolated
    (1, 3)
    """
    for value, arg in (
        (num_layers, "num_layers"),
        (num_heads, "num_heads"),
        (hidden_dim, "hidden_dim"),
        (intermediate_dim, "intermediate_dim"),
        (num_channels, "num_channels"),
    ):
        check_positive_int(value, arg)
    if num_classes is not None:
        check_positive_int(num_classes, "num_classes")
    if hidden_dim % num_heads:
        raise ValueError(
            f"`num_heads` must divide `hidden_dim`. Received: num_heads={num_heads} "
            f"and hidden_dim={hidden_dim}"
        )
    check_rate(dropout, "dropout")
    check_positive_float(layer_norm_epsilon, "layer_norm_epsilon")
    check_choice(pooling, "pooling", POOLINGS)

    # Any height and width: other resolutions interpolate the position table.
    images = keras.Input(shape=(None, None, num_channels), dtype="float32", name="images")
    x = PatchEmbedding(
        image_size,
        patch_size,
        hidden_dim,
        num_channels=num_channels,
        dtype=dtype,
        name="patch_embedding",
    )(images)  # (B, N + 1, D)
    x = Dropout(dropout, dtype=dtype, name="embeddings_dropout")(x)

    # A head on the class token reads nothing else of the last block: that block runs
    # at the class token alone (every token still a key and value), the same logits.
    token_head = num_classes is not None and pooling == "token"
    # ViT is pre-norm, LayerNorm before each sub-layer (Dosovitskiy et al. 2021, eq. 2-3).
    for i in range(num_layers):
        last = i == num_layers - 1
        x = TransformerEncoderBlock(
            num_heads,
            intermediate_dim,
            dropout=dropout,
            activation="gelu",
            layer_norm_epsilon=layer_norm_epsilon,
            normalize_first=True,
            dtype=dtype,
            name=f"encoder_block_{i}",
        )(x, output_length=1 if last and token_head else None)
    x = keras.layers.LayerNormalization(
        epsilon=layer_norm_epsilon, dtype=dtype, name="final_layer_norm"
    )(x)  # (B, N + 1, D); (B, 1, D) with the class-token head
    if num_classes is None:
        return Model({"images": images}, x, name=name)

    if pooling == "token":
        pooled = x[:, 0]  # (B, D), the class token (equation 4)
    else:
        pooled = ops.mean(x[:, 1:], axis=1)  # (B, D), the patch tokens only
    logits = keras.layers.Dense(num_classes, dtype=dtype, name="classifier")(pooled)
    # Logits in float32 under mixed precision too, as keras-hub's heads give them.
    return Model({"images": images}, ops.cast(logits, "float32"), name=name)




CONFIGS = {
    "vit_tiny": dict(
        image_size=32,
        patch_size=4,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        intermediate_dim=128,
        num_classes=10,
    ),
    # ViT-B/16, ViT-L/16, ViT-H/14: table 1 of the paper.
    "vit_base_16": dict(
        image_size=224,
        patch_size=16,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        intermediate_dim=3072,
        num_classes=1000,
    ),
    "vit_large_16": dict(
        image_size=224,
        patch_size=16,
        num_layers=24,
        num_heads=16,
        hidden_dim=1024,
        intermediate_dim=4096,
        num_classes=1000,
    ),
    "vit_huge_14": dict(
        image_size=224,
        patch_size=14,
        num_layers=32,
        num_heads=16,
        hidden_dim=1280,
        intermediate_dim=5120,
        num_classes=1000,
    ),
}
