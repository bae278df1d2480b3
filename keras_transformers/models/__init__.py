"""Model builders (functional API) and their canonical configurations."""

from keras_transformers.models.model import Model, validate_inputs
from keras_transformers.models.presets import available_presets, from_preset, preset_config
