"""Transformer building blocks, each a registered, serializable Keras layer."""

from keras_transformers.layers import masks
from keras_transformers.layers.multi_head_attention import MultiHeadAttention
