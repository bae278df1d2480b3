import json

import keras
import numpy as np
import pytest

from keras_transformers.schedules import TransformerSchedule
from tests.testing import to_numpy


def paper_rate(step, hidden_dim, warmup_steps):
    """Vaswani et al. (2017), equation 3, steps counted from 1."""
    return hidden_dim**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


@pytest.mark.parametrize("hidden_dim,warmup_steps", [(512, 4000), (256, 100)])
def test_matches_the_paper_formula(hidden_dim, warmup_steps):
    schedule = TransformerSchedule(hidden_dim, warmup_steps)
    for step in [0, 1, 10, warmup_steps - 2, warmup_steps - 1, warmup_steps, 3 * warmup_steps, 10**6]:
        expected = paper_rate(step + 1, hidden_dim, warmup_steps)
        np.testing.assert_allclose(float(to_numpy(schedule(step))), expected, rtol=1e-5)


def test_peak_at_warmup_and_scale():
    schedule = TransformerSchedule(64, 50, scale=2.0)
    rates = [float(to_numpy(schedule(step))) for step in range(200)]
    assert int(np.argmax(rates)) == 49  # optimizer step 49 is the paper's step 50
    np.testing.assert_allclose(max(rates), 2.0 * 64**-0.5 * 50**-0.5, rtol=1e-5)


def test_serialization_and_optimizer():
    schedule = TransformerSchedule(128, 10, scale=0.5)
    config = json.loads(json.dumps(keras.optimizers.schedules.serialize(schedule)))
    restored = keras.optimizers.schedules.deserialize(config)
    assert isinstance(restored, TransformerSchedule)
    assert restored.get_config() == schedule.get_config()

    optimizer = keras.optimizers.Adam(schedule)
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer.apply_gradients([(keras.ops.ones(3), variable)])
    np.testing.assert_allclose(
        float(to_numpy(optimizer.learning_rate)), 0.5 * paper_rate(2, 128, 10), rtol=1e-5
    )
    restored_optimizer = keras.optimizers.Adam.from_config(optimizer.get_config())
    assert isinstance(restored_optimizer._learning_rate, TransformerSchedule)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(hidden_dim=0, warmup_steps=10), "hidden_dim"),
        (dict(hidden_dim=8, warmup_steps=1.5), "warmup_steps"),
        (dict(hidden_dim=8, warmup_steps=10, scale=0), "scale"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=f"`{message}` must be"):
        TransformerSchedule(**kwargs)
