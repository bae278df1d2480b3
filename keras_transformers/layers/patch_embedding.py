"""ViT input layer: linear patch embeddings, a class token and learned position embeddings.

Dosovitskiy et al., "An Image is Worth 16x16 Words" (2021), section 3.1, equation 1, and
section 3.2 (position embeddings interpolated for other resolutions).
"""

import keras
from keras import ops

from keras_transformers.layers.arguments import check_positive_int, clone_initializer
from keras_transformers.layers.sublayers import call_sublayer


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


# The bicubic kernel's coefficient in PyTorch's `interpolate` (and OpenCV), which Hugging
# Face's `interpolate_pos_encoding` uses; TensorFlow and JAX resize with -0.5, so
# `keras.ops.image.resize` gives a different table on each backend.
_CUBIC_A = -0.75


def _cubic_tap_weights(t):
    """Weights of the taps at offsets -1, 0, 1 and 2 from floor(x), where t = x - floor(x)."""

    def near(x):  # |x| <= 1
        return ((_CUBIC_A + 2) * x - (_CUBIC_A + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((_CUBIC_A * x - 5 * _CUBIC_A) * x + 8 * _CUBIC_A) * x - 4 * _CUBIC_A

    return (far(t + 1), near(t), near(1 - t), far(2 - t))


def _bicubic_matrix(in_size, out_size):
    """The (out_size, in_size) matrix of 1-D bicubic resizing with half-pixel centres.

    As `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`: output
    i samples the input at x = (i + 0.5) * in_size / out_size - 0.5, from four taps
    clamped to the border. `out_size` may be a tensor (unknown in a traced graph).
    At out_size == in_size the matrix is exactly the identity.
    """
    scale = ops.cast(in_size, "float32") / ops.cast(out_size, "float32")
    source = (ops.arange(out_size, dtype="float32") + 0.5) * scale - 0.5  # (out,)
    floor = ops.floor(source)
    index = ops.cast(floor, "int32")
    matrix = 0.0
    for offset, weight in zip((-1, 0, 1, 2), _cubic_tap_weights(source - floor)):
        taps = ops.clip(index + offset, 0, in_size - 1)
        matrix = matrix + ops.one_hot(taps, in_size, dtype="float32") * weight[:, None]
    return matrix  # (out, in)


@keras.saving.register_keras_serializable(package="keras_transformers")
class PatchEmbedding(keras.layers.Layer):
    """Splits images into patches, projects them, prepends a class token, adds positions.

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos (equation 1 of the paper): the
    N = (H / P_h) * (W / P_w) non-overlapping patches are flattened and projected
    by E, implemented as a `Conv2D` with kernel = stride = patch size and "valid"
    padding. Images are channels-last (B, H, W, C).

    Resolution: the position table is learned for the patch grid of
    `image_size`. Images of another size (height and width multiples of
    `patch_size`) get that grid's table resized by bicubic interpolation to their
    own patch grid, the class token's position kept as is (section 3.2); this is
    Hugging Face's `interpolate_pos_encoding` (PyTorch bicubic, half-pixel
    centres), computed with `keras.ops` so that every backend gives the same
    table. At `image_size` the table is used unchanged.

    Args:
        image_size: int or (height, width) of the images the position table is
            learned for.
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
        images: (B, H, W, C), usually of `image_size`; H and W must be multiples
            of `patch_size`.

    Returns:
        The (B, N + 1, hidden_dim) embeddings with the class token first, or
        (B, N, hidden_dim) without it, in the compute dtype; N = (H / P_h) * (W / P_w).

    Example:

    >>> import numpy as np
    >>> layer = PatchEmbedding(image_size=32, patch_size=8, hidden_dim=16)
    >>> tuple(layer(np.zeros((2, 32, 32, 3), "float32")).shape)
    (2, 17, 16)
    >>> tuple(layer.position_embedding.shape)
    (17, 16)
    >>> tuple(layer(np.zeros((2, 48, 40, 3), "float32")).shape)  # a 6x5 grid
    (2, 31, 16)
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
        if (height is not None and height % self.patch_size[0]) or (
            width is not None and width % self.patch_size[1]
        ):
            raise ValueError(
                "`images` must have a height and width that are multiples of "
                f"`patch_size`={self.patch_size}. "
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

    def interpolated_position_embedding(self, grid_size):
        """The position table resized to a (height, width) patch grid (section 3.2).

        The class token's position is kept; the grid of patch positions is
        resized by bicubic interpolation (see the class docstring). Always
        interpolates: at `grid_size == self.grid_size` the result equals the table.

        Args:
            grid_size: (height, width) of the new patch grid; ints or scalar tensors.

        Returns:
            The float32 (height * width [+ 1], hidden_dim) table.
        """
        table = ops.cast(self.position_embedding, "float32")
        num_prefix = int(self.use_class_token)
        grid = ops.reshape(
            table[num_prefix:], (self.grid_size[0], self.grid_size[1], self.hidden_dim)
        )  # (h, w, D)
        rows = _bicubic_matrix(self.grid_size[0], grid_size[0])  # (h', h)
        columns = _bicubic_matrix(self.grid_size[1], grid_size[1])  # (w', w)
        grid = ops.einsum("ih,hwd->iwd", rows, grid)  # (h', w, D)
        grid = ops.einsum("jw,iwd->ijd", columns, grid)  # (h', w', D)
        patches = ops.reshape(grid, (-1, self.hidden_dim))  # (h' * w', D)
        return ops.concatenate([table[:num_prefix], patches], axis=0)

    def call(self, images):
        self._check_images_shape(images.shape, self.patch_projection.kernel.shape[2])
        images = ops.cast(images, self.compute_dtype)
        patches = call_sublayer(self.patch_projection, images)  # (B, h, w, D)
        # Static sizes where known; tensors in a graph traced for any resolution.
        grid_size = tuple(
            static if static is not None else dynamic
            for static, dynamic in zip(patches.shape[1:3], ops.shape(patches)[1:3])
        )
        batch_size = ops.shape(patches)[0]
        embeddings = ops.reshape(patches, (batch_size, -1, self.hidden_dim))  # (B, N, D)
        if self.use_class_token:
            class_token = ops.broadcast_to(
                ops.cast(self.class_token, self.compute_dtype), (batch_size, 1, self.hidden_dim)
            )  # (B, 1, D)
            embeddings = ops.concatenate([class_token, embeddings], axis=1)  # (B, N + 1, D)
        if all(isinstance(n, int) for n in grid_size) and grid_size == self.grid_size:
            positions = self.position_embedding
        else:
            positions = self.interpolated_position_embedding(grid_size)
        return embeddings + ops.cast(positions, self.compute_dtype)

    def compute_output_shape(self, images_shape):
        self._check_images_shape(images_shape, self.num_channels)
        height, width = images_shape[1:3]
        num_patches = (
            None
            if None in (height, width)
            else (height // self.patch_size[0]) * (width // self.patch_size[1])
        )
        length = None if num_patches is None else num_patches + int(self.use_class_token)
        return (images_shape[0], length, self.hidden_dim)

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
