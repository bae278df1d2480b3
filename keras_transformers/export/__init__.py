"""SavedModel export for TensorFlow Serving, from a model on any backend.

`export_saved_model(model, "saved_models/gpt2")` writes `saved_models/gpt2/1/`. TensorFlow is
imported only while exporting, so importing this package on JAX or torch does not import it.
"""

from keras_transformers.export.saved_model import export_saved_model, export_session
from keras_transformers.export.signatures import available_signatures, describe
