"""Checkpoint import: Hugging Face safetensors folders -> our models."""

from keras_transformers.convert.huggingface import from_huggingface, tokenizer_from_huggingface
