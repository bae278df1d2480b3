"""ViT input layer: linear patch embeddings, a class token and learned position embeddings.

Dosovitskiy et al., "An Image is Worth 16x16 Words" (2021), section 3.1, equation 1.
"""

import keras
from keras import ops

from keras_transformers.layers.arguments import check_positive_int, clone_initializer


def _pair(value, name):
    """`value` as an (h, w) tuple of positive ints; an int means a square."""
    pair = (value, value) if isinstance(value, int) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in pair)
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a tuple of two positive ints. "
            f"Received: {name}={value!r}"
        )
    return tuple(pair)


@keras.saving.register_keras_serializable(package="keras_transformers")
class PatchEmbedding(keras.layers.Layer):
    """Splits images into patches, projects them, prepends a class token, adds positions.

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos (equation 1 of the paper): the
    N = (H / P_h) * (W / P_w) non-overlapping patches are flattened and projected
    by E, implemented as a `Conv2D` with kernel = stride = patch size and "valid"
    padding. Images are channels-last (B, H, W, C) and must have exactly
    `image_size`; other resolutions would need the position table interpolated
    (section 3.2), which this layer does not do.

    Args:
        image_size: int or (height, width) of the input images.
        patch_size: int or (height, width) of a patch; must divide `image_size`.
        hidden_dim: size of the patch embeddings.
        use_class_token: whether to prepend the learned class token.
        num_channels: channels of the input images; None to take them from the
            input when the layer is built.
        kernel_initializer: initializer of the patch projection kernel.
        bias_initializer: initializer of the patch projection bias.
        embeddings_initializer: initializer of the class token and the position
            embeddings.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        images: (B, H, W, C), with (H, W) = `image_size`.

    Returns:
        The (B, N + 1, hidden_dim) embeddings with the class token first, or
        (B, N, hidden_dim) without it, in the compute dtype.

    Example:

    >>> import numpy as np
    >>> layer = PatchEmbedding(image_size=32, patch_size=8, hidden_dim=16)
    >>> tuple(layer(np.zeros((2, 32, 32, 3), "float32")).shape)
    (2, 17, 16)
    >>> tuple(layer.position_embedding.shape)
    (17, 16)
    """

    def __init__(
        self,
        image_size,
        patch_size,
        hidden_dim,
        use_class_token=True,
        num_channels=None,
        kernel_initializer="lecun_normal",
        bias_initializer="zeros",
        embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
        **kwargs,
    ):
        super().__init__(**kwargs)
        image_size = _pair(image_size, "image_size")
        patch_size = _pair(patch_size, "patch_size")
        if image_size[0] % patch_size[0] or image_size[1] % patch_size[1]:
            raise ValueError(
                "`patch_size` must divide `image_size`. "
                f"Received: image_size={image_size}, patch_size={patch_size}"
            )
        check_positive_int(hidden_dim, "hidden_dim")
        if num_channels is not None:
            check_positive_int(num_channels, "num_channels")
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.use_class_token = use_class_token
        self.num_channels = num_channels
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.grid_size = (image_size[0] // patch_size[0], image_size[1] // patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def _check_images_shape(self, images_shape, num_channels):
        if len(images_shape) != 4:
            raise ValueError(
                "`images` must have rank 4 (batch, height, width, channels). "
                f"Received: images with shape={tuple(images_shape)}"
            )
        height, width, channels = images_shape[1:]
        # The seam for other resolutions: they need the position table interpolated.
        if None not in (height, width) and (height, width) != self.image_size:
            raise ValueError(
                f"`images` must be {self.image_size[0]}x{self.image_size[1]} "
                f"(`image_size`={self.image_size}). "
                f"Received: images with shape={tuple(images_shape)}"
            )
        if None not in (channels, num_channels) and channels != num_channels:
            raise ValueError(
                f"`images` must have {num_channels} channels (`num_channels`). "
                f"Received: images with shape={tuple(images_shape)}"
            )

    def build(self, images_shape):
        self._check_images_shape(images_shape, self.num_channels)
        if images_shape[-1] is None:
            raise ValueError(
                "`images` must have a known number of channels. "
                f"Received: images with shape={tuple(images_shape)}"
            )
        self.patch_projection = keras.layers.Conv2D(
            self.hidden_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            data_format="channels_last",
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            name="patch_projection",
            dtype=self.dtype_policy,
        )
        self.patch_projection.build(images_shape)
        if self.use_class_token:
            self.class_token = self.add_weight(
                shape=(1, 1, self.hidden_dim),
                initializer=clone_initializer(self.embeddings_initializer),
                name="class_token",
            )
        self.position_embedding = self.add_weight(
            shape=(self.num_patches + int(self.use_class_token), self.hidden_dim),
            initializer=clone_initializer(self.embeddings_initializer),
            name="position_embedding",
        )
        self.built = True

    def call(self, images):
        self._check_images_shape(images.shape, self.patch_projection.kernel.shape[2])
        patches = self.patch_projection(ops.cast(images, self.compute_dtype))  # (B, h, w, D)
        embeddings = ops.reshape(patches, (-1, self.num_patches, self.hidden_dim))  # (B, N, D)
        if self.use_class_token:
            class_token = ops.broadcast_to(
                ops.cast(self.class_token, self.compute_dtype),
                (ops.shape(embeddings)[0], 1, self.hidden_dim),
            )  # (B, 1, D)
            embeddings = ops.concatenate([class_token, embeddings], axis=1)  # (B, N + 1, D)
        return embeddings + ops.cast(self.position_embedding, self.compute_dtype)

    def compute_output_shape(self, images_shape):
        self._check_images_shape(images_shape, self.num_channels)
        return (images_shape[0], self.num_patches + int(self.use_class_token), self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "hidden_dim": self.hidden_dim,
                "use_class_token": self.use_class_token,
                "num_channels": self.num_channels,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config
