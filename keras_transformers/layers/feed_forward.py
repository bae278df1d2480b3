"""Position-wise feed-forward network: Dense -> activation -> Dense.

Vaswani et al., "Attention Is All You Need" (2017), section 3.3.
"""

import keras
from keras import ops

from keras_transformers.layers.arguments import (
    check_choice,
    check_positive_int,
    check_rate,
    clone_initializer,
)
from keras_transformers.layers.dropout import Dropout
from keras_transformers.layers.sublayers import call_sublayer

# "gelu" is the exact (erf) GELU of BERT and ViT; "gelu_approximate" the tanh
# approximation GPT-2 was trained with.
ACTIVATIONS = ("gelu", "gelu_approximate", "relu")


@keras.saving.register_keras_serializable(package="keras_transformers")
class FeedForward(keras.layers.Layer):
    """Position-wise feed-forward network: W_2 Dropout(activation(x W_1 + b_1)) + b_2.

    Applied to every position alone, so it passes on any Keras mask unchanged.
    Dropout sits after the activation, on the intermediate features; the
    transformer blocks leave it at 0 and drop out the block's output instead, as
    the paper does (section 5.4).

    Args:
        intermediate_dim: size of the hidden layer (d_ff).
        activation: "gelu" (exact, erf), "gelu_approximate" (tanh, GPT-2) or
            "relu" (the paper).
        dropout: dropout rate after the activation.
        output_dim: size of the output; defaults to the input's last dimension.
        use_bias: whether both dense layers have biases.
        kernel_initializer: initializer of both kernels.
        bias_initializer: initializer of both biases.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: (..., D).
        training: whether dropout is active.

    Returns:
        (..., output_dim), `output_dim` defaulting to D.

    Example:

    >>> import numpy as np
    >>> layer = FeedForward(intermediate_dim=32, activation="relu")
    >>> x = np.random.rand(2, 5, 8).astype("float32")
    >>> tuple(layer(x).shape)
    (2, 5, 8)
    """

    def __init__(
        self,
        intermediate_dim,
        activation="gelu",
        dropout=0.0,
        output_dim=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int(intermediate_dim, "intermediate_dim")
        check_choice(activation, "activation", ACTIVATIONS)
        check_rate(dropout, "dropout")
        if output_dim is not None:
            check_positive_int(output_dim, "output_dim")
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.dropout = dropout
        self.output_dim = output_dim
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def build(self, inputs_shape):
        output_dim = self.output_dim or inputs_shape[-1]
        self.intermediate_dense = self._dense(self.intermediate_dim, "intermediate_dense")
        self.intermediate_dense.build(inputs_shape)
        self.dropout_layer = Dropout(
            self.dropout, name="intermediate_dropout", dtype=self.dtype_policy
        )
        self.output_dense = self._dense(output_dim, "output_dense")
        self.output_dense.build(tuple(inputs_shape[:-1]) + (self.intermediate_dim,))
        self.built = True

    def _dense(self, units, name):
        return keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            name=name,
            dtype=self.dtype_policy,
        )

    def call(self, inputs, training=None):
        x = call_sublayer(self.intermediate_dense, inputs)  # (..., intermediate_dim)
        if self.activation == "relu":
            x = ops.relu(x)
        else:
            x = ops.gelu(x, approximate=self.activation == "gelu_approximate")
        x = call_sublayer(self.dropout_layer, x, training=training)
        return call_sublayer(self.output_dense, x)  # (..., output_dim)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape[:-1]) + (self.output_dim or inputs_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "intermediate_dim": self.intermediate_dim,
                "activation": self.activation,
                "dropout": self.dropout,
                "output_dim": self.output_dim,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
