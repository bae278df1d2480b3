"""KV-cached decoding: `generate` for GPT-2 and the encoder-decoder Transformer, and its samplers.

`generate(model, inputs, max_new_tokens, sampler=...)` is the entry point;
`generate_tensors` is its traceable core (for export), `samplers` holds token
selection and the shared decoding loop, `backend` the per-backend compilation.
"""

from keras_transformers.generation.generate import SAMPLERS, generate, generate_tensors
