"""On the JAX and torch backends, importing and using keras_transformers never imports TensorFlow.

Every module is imported except those that import TensorFlow by design (see
test_docstrings.package_modules); the layers that exist are built and called.

Checked in a fresh subprocess: the test process itself may have imported TensorFlow through
other tests or plugins.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.test_docstrings import MODULES
from tests.testing import BACKEND

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Builds and calls each public layer it knows how to make; the rest are at least imported.
SCRIPT = textwrap.dedent(
    """
    import importlib
    import sys

    import numpy as np
    from keras import ops

    import keras_transformers
    from keras_transformers import layers

    for name in sys.argv[1:]:
        importlib.import_module(name)

    x = np.random.default_rng(0).normal(size=(2, 6, 8)).astype("float32")
    ids = np.array([[1, 2, 3, 4, 0, 0], [5, 6, 7, 1, 2, 3]], dtype="int32")
    examples = {
        "MultiHeadAttention": (dict(num_heads=2, key_dim=4), (x,), dict(use_causal_mask=True)),
        "TokenAndPositionEmbedding": (
            dict(vocabulary_size=10, max_sequence_length=6, hidden_dim=8), (ids,), {}
        ),
        "TransformerEncoderBlock": (dict(num_heads=2, intermediate_dim=16), (x,), {}),
        "TransformerDecoderBlock": (
            dict(num_heads=2, intermediate_dim=16, use_cross_attention=False), (x,), {}
        ),
    }
    public = [name for name in dir(layers) if name[:1].isupper()]
    called = []
    for name, (init_kwargs, args, call_kwargs) in examples.items():
        if hasattr(layers, name):
            output = getattr(layers, name)(**init_kwargs)(*args, **call_kwargs)
            output = output[0] if isinstance(output, (tuple, list)) else output
            assert np.all(np.isfinite(ops.convert_to_numpy(output)))
            called.append(name)
    assert "MultiHeadAttention" in called, called
    loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
    assert not loaded, f"TensorFlow was imported: {loaded[:5]}"
    print("called", ",".join(called), "public", ",".join(public))
    """
)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow is the backend itself here")
def test_no_tensorflow_import_on_this_backend():
    env = dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        # Every module that does not need TensorFlow by design (export/, tf.data pipelines).
        [sys.executable, "-c", SCRIPT] + [name for name, needs_tensorflow in MODULES if not needs_tensorflow],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "called MultiHeadAttention" in result.stdout
