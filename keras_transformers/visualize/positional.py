"""The sinusoidal positional encoding as a picture: positions down, dimensions across.

Vaswani et al., "Attention Is All You Need" (2017), section 3.5.
"""

import numpy as np
from keras import ops

from keras_transformers.layers.sine_positional_encoding import SinePositionalEncoding
from keras_transformers.visualize.plots import _figure, _save


def plot_positional_encoding(path, length=20, depth=512, max_wavelength=10000, title=None):
    """Draws the positional encoding of `length` positions x `depth` dimensions.

    The values are those of `layers.SinePositionalEncoding` (the model's own
    layer): PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...), sines
    and cosines interleaved. The default, 20 positions x 512 dimensions, is the
    usual picture of the paper's base model.

    Args:
        path: the PNG file to write.
        length: number of positions (rows).
        depth: number of dimensions (columns), d_model.
        max_wavelength: the base of the wavelengths (10000 in the paper).
        title: the figure's title.

    Returns:
        The matplotlib `Figure`, already saved to `path`; its first axes' image
        holds the (length, depth) values drawn.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "positional.png")
    >>> figure = plot_positional_encoding(path, length=4, depth=8)
    >>> figure.axes[0].images[0].get_array().shape
    (4, 8)
    """
    for name, value in (("length", length), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    layer = SinePositionalEncoding(max_wavelength=max_wavelength)
    encoding = layer(ops.zeros((1, length, depth), "float32"))  # (1, length, depth)
    values = np.asarray(ops.convert_to_numpy(encoding))[0]  # (length, depth)
    figure = _figure(10, 3.5)
    axis = figure.subplots()
    image = axis.imshow(values, cmap="RdBu", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    axis.set_xlabel("dimension")
    axis.set_ylabel("position")
    figure.colorbar(image, ax=axis)
    axis.set_title(title or f"sinusoidal positional encoding: {length} positions x {depth} dimensions")
    return _save(figure, path)
