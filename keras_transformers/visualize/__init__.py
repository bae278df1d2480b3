"""Attention maps and positional-encoding pictures for the models this library builds.

`attention_scores(model, inputs)` gives every layer's attention probabilities; the
`plot_*` functions draw them (and the sinusoidal encoding) as PNG files with matplotlib,
which they import when called.
"""

from keras_transformers.visualize.attention import attention_rollout, attention_scores, model_kind
from keras_transformers.visualize.plots import (
    plot_attention,
    plot_attention_maps,
    plot_image_attention,
    plot_token_attention,
    token_labels,
)
from keras_transformers.visualize.positional import plot_positional_encoding
