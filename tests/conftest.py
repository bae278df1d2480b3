import keras
import pytest


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32 and a fixed seed.

    (No `clear_session` here: it costs about a second a test, and the suite runs three
    times in CI.)"""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
