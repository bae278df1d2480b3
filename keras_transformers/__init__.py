"""keras_transformers: transformer layers and model builders for Keras 3.

Runs unchanged on the TensorFlow, JAX and PyTorch backends. Importing this package
never imports TensorFlow on the JAX or torch backends.
"""

from keras_transformers import layers

__version__ = "0.1.0"
