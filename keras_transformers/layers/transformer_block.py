"""What the encoder and decoder blocks share: their arguments, their sublayers, their config.

Vaswani et al., "Attention Is All You Need" (2017), section 3.1.
"""

import keras

from keras_transformers.layers.arguments import (
    check_bool,
    check_choice,
    check_positive_float,
    check_positive_int,
    check_rate,
    clone_initializer,
)
from keras_transformers.layers.dropout import Dropout
from keras_transformers.layers.feed_forward import ACTIVATIONS, FeedForward
from keras_transformers.layers.multi_head_attention import MultiHeadAttention


class TransformerBlock(keras.layers.Layer):
    """The base of `TransformerEncoderBlock` and `TransformerDecoderBlock`; not a layer of
    its own (not exported, not registered).

    It checks and stores the arguments both blocks take, makes their sublayers (attention,
    feed-forward network, layer norms, dropout) and writes those arguments to the config.
    Each block builds its sublayers in its own `build`, in the order that fixes its weights'
    order, and keeps its own `call`.

    Its arguments are `TransformerEncoderBlock`'s (documented there).
    """

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        dropout=0.0,
        attention_dropout=None,
        activation="relu",
        layer_norm_epsilon=1e-5,
        normalize_first=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int(num_heads, "num_heads")
        check_positive_int(intermediate_dim, "intermediate_dim")
        check_rate(dropout, "dropout")
        if attention_dropout is not None:
            check_rate(attention_dropout, "attention_dropout")
        check_choice(activation, "activation", ACTIVATIONS)
        check_positive_float(layer_norm_epsilon, "layer_norm_epsilon")
        check_bool(normalize_first, "normalize_first")
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.normalize_first = normalize_first
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def _attention(self, name, hidden_dim):
        return MultiHeadAttention(
            self.num_heads,
            hidden_dim // self.num_heads,
            dropout=self.dropout if self.attention_dropout is None else self.attention_dropout,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            name=name,
            dtype=self.dtype_policy,
        )

    def _feedforward(self):
        # The paper (section 5.4) drops out each sub-layer's output only: no dropout
        # inside the feed-forward network.
        return FeedForward(
            self.intermediate_dim,
            activation=self.activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            name="feedforward",
            dtype=self.dtype_policy,
        )

    def _layer_norm(self, name):
        return keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name=name, dtype=self.dtype_policy
        )

    def _dropout(self, name):
        return Dropout(self.dropout, name=name, dtype=self.dtype_policy)

    def compute_mask(self, inputs, previous_mask=None):
        return previous_mask

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "normalize_first": self.normalize_first,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
