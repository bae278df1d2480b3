"""Canonical model configurations by name: `from_preset("gpt2_small")`.

Each family module (transformer.py, bert.py, gpt2.py, vit.py) ends with a `CONFIGS`
dict from preset name to builder arguments, and its builder is named after the family.
"""

import importlib

_FAMILIES = ("transformer", "bert", "gpt2", "vit")


def _family_module(family):
    return importlib.import_module(f"keras_transformers.models.{family}")


def available_presets():
    """Returns the sorted names of every preset.

    Example:

    >>> "gpt2_small" in available_presets()
    True
    """
    names = []
    for family in _FAMILIES:
        names += list(_family_module(family).CONFIGS)
    return sorted(names)


def preset_config(name):
    """Returns a copy of the builder arguments of preset `name`."""
    family = name.split("_")[0] if isinstance(name, str) else None
    if family not in _FAMILIES or name not in _family_module(family).CONFIGS:
        raise ValueError(
            f"`name` must be one of {available_presets()}. Received: name={name!r}"
        )
    return dict(_family_module(family).CONFIGS[name])


def from_preset(name, **overrides):
    """Builds the model of preset `name` (random weights), with `overrides` applied.

    Args:
        name: a preset name, such as "bert_base" or "vit_tiny".
        **overrides: builder arguments that replace the preset's.

    Returns:
        A functional `keras.Model`.

    Example:

    >>> model = from_preset("gpt2_tiny", num_layers=1)
    >>> model.name
    'gpt2'
    """
    config = preset_config(name)
    config.update(overrides)
    family = name.split("_")[0]
    return getattr(_family_module(family), family)(**config)
