"""Hugging Face checkpoint folders (config.json + model.safetensors) -> our models.

Weights are read with `safetensors` in numpy: torch is not needed.
"""

import importlib
import json
import os

import numpy as np

# model_type in config.json -> our module under keras_transformers.convert.
_FAMILIES = {"bert": "bert", "gpt2": "gpt2", "vit": "vit"}


def read_config(path):
    """Returns the parsed `config.json` of checkpoint folder `path`."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isdir(path):
        raise ValueError(f"`path` must be a checkpoint folder. Received: path={path!r}")
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"No config.json in the checkpoint folder. Received: path={path!r}")
    with open(config_file, encoding="utf-8") as f:
        return json.load(f)


def read_weights(path):
    """Returns every tensor of `path`/model.safetensors as a dict of numpy arrays."""
    from safetensors.numpy import load_file

    weights_file = os.path.join(path, "model.safetensors")
    if not os.path.isfile(weights_file):
        raise ValueError(
            f"No model.safetensors in the checkpoint folder. Received: path={path!r}"
        )
    return load_file(weights_file)


class WeightMap:
    """Collects (variable, array) pairs, checks them all, then assigns them all.

    Nothing is assigned until every tensor was found with the right shape, so a bad
    checkpoint never leaves a half-loaded model.
    """

    def __init__(self, weights, source):
        self.weights = weights
        self.source = source
        self.pairs = []
        self.used = set()

    def tensor(self, name):
        """The checkpoint tensor `name` (prefix variants are the caller's job)."""
        if name not in self.weights:
            raise ValueError(
                f"Tensor `{name}` is missing from {self.source}. "
                f"It holds e.g. {sorted(self.weights)[:5]}"
            )
        self.used.add(name)
        return self.weights[name]

    def add(self, variable, array, name):
        """Schedules `variable.assign(array)`; `name` is the checkpoint tensor(s)."""
        array = np.asarray(array)
        if tuple(variable.shape) != tuple(array.shape):
            raise ValueError(
                f"Tensor `{name}` in {self.source} has shape {tuple(array.shape)}, but "
                f"`{variable.path}` needs {tuple(variable.shape)}."
            )
        self.pairs.append((variable, array))

    def assign_all(self):
        for variable, array in self.pairs:
            variable.assign(array.astype(variable.dtype))


def _family(config, path):
    model_type = config.get("model_type")
    if model_type not in _FAMILIES:
        raise ValueError(
            f"Unsupported architecture in {os.path.join(path, 'config.json')}: "
            f"model_type must be one of {sorted(_FAMILIES)}. Received: model_type={model_type!r}"
        )
    return importlib.import_module(f"keras_transformers.convert.{_FAMILIES[model_type]}")


def from_huggingface(path, dtype=None, **options):
    """Builds our model from a Hugging Face checkpoint folder and loads its weights.

    Supports BERT (`BertModel` weights -> `models.bert`), GPT-2 (`GPT2Model` /
    `GPT2LMHeadModel` -> `models.gpt2`) and ViT (`ViTModel` /
    `ViTForImageClassification` -> `models.vit`).

    Args:
        path: folder holding `config.json` and `model.safetensors`.
        dtype: dtype policy of the built model (default: the global policy).
        **options: family-specific loader options, passed to
            `keras_transformers.convert.<family>.load` (BERT: `head`,
            `allow_missing_pooler`).

    Returns:
        A functional `keras.Model` with the checkpoint's weights.

    Raises:
        ValueError: a missing file, an unsupported `model_type`, or a missing or
            ill-shaped tensor (named in the message); nothing is loaded then.
    """
    config = read_config(path)
    module = _family(config, path)
    weights = read_weights(path)
    source = os.path.join(path, "model.safetensors")
    return module.load(config, weights, source=source, dtype=dtype, **options)


def tokenizer_from_huggingface(path):
    """Returns the keras-hub tokenizer matching the checkpoint in `path`.

    BERT: `keras_hub.tokenizers.WordPieceTokenizer` over `vocab.txt`; GPT-2:
    `keras_hub.tokenizers.BytePairTokenizer` over `vocab.json` and `merges.txt`.
    """
    config = read_config(path)
    return _family(config, path).tokenizer(path)
