import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_transformers.callbacks import InitialStep, StopAfterSteps, resumable_callbacks
from tests.testing import BACKEND

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_model(compile=True):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    if compile:
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def data(batches, batch_size=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batches * batch_size, 3)).astype("float32")
    return x, x.sum(-1, keepdims=True)


class CountBatches(keras.callbacks.Callback):
    """An independent count of the batches fit ran."""

    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


class CrashAt(keras.callbacks.Callback):
    """Raises once the optimizer reaches `step`: a crash that leaves the backup behind."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == self.step:
            raise RuntimeError("crash")


@pytest.mark.parametrize("steps,epochs_run", [(1, 1), (13, 3), (15, 3)])
def test_stop_after_steps_stops_fit_mid_epoch(steps, epochs_run):
    model, count = small_model(), CountBatches()
    x, y = data(5)
    history = model.fit(x, y, batch_size=4, epochs=10, verbose=0, callbacks=[StopAfterSteps(steps), count])
    assert count.batches == steps
    assert len(history.history["loss"]) == epochs_run


def test_stop_after_steps_counts_optimizer_steps_not_batches_of_this_fit():
    model, count = small_model(), CountBatches()
    x, y = data(5)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 5 steps already taken
    model.fit(x, y, batch_size=4, epochs=10, verbose=0, callbacks=[StopAfterSteps(8), count])
    assert count.batches == 3


def test_stop_after_steps_with_exit_code_ends_the_process():
    script = textwrap.dedent(
        """
        import keras, numpy as np
        from keras_transformers.callbacks import StopAfterSteps
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(np.zeros((40, 3)), np.zeros((40, 1)), batch_size=4, epochs=3, verbose=0,
                  callbacks=[StopAfterSteps(7, exit_code=5, verbose=1)])
        print("fit returned")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 5, result.stderr[-3000:]
    assert "interrupted after step 7" in result.stdout
    assert "fit returned" not in result.stdout


def test_initial_step_reads_the_step_restored_from_a_backup(tmp_path):
    x, y = data(5)
    # 2 epochs of 5 steps, a backup every 2 batches (steps 2, 4, 6, ...), a crash at step 7.
    model = small_model()
    callbacks, start = resumable_callbacks(tmp_path, backup_every=2, checkpoint=None, tensorboard=False)
    with pytest.raises(RuntimeError, match="crash"):
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=callbacks + [CrashAt(7)])
    assert start.initial_step == 0
    assert os.path.isfile(tmp_path / "backup" / "latest.weights.h5")
    backed_up = small_model(compile=False)
    backed_up.load_weights(tmp_path / "backup" / "latest.weights.h5")

    # A fresh model and process state: the run resumes from the step-6 backup and redoes
    # epoch 2 from its first batch (Keras' BackupAndRestore), 6 + 5 = 11 steps in all.
    resumed, count = small_model(), CountBatches()
    callbacks, start = resumable_callbacks(tmp_path, backup_every=2, checkpoint=None, tensorboard=False)
    assert start is callbacks[1] and isinstance(callbacks[0], keras.callbacks.BackupAndRestore)
    check = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(resumed.layers[0].kernel),
            keras.ops.convert_to_numpy(backed_up.layers[0].kernel),
        )
    )
    resumed.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=callbacks + [check, count])
    assert start.initial_step == 6
    assert count.batches == 5
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == 11
    assert not os.path.exists(tmp_path / "backup")  # deleted: fit finished


def test_resumable_callbacks_order_and_options(tmp_path):
    callbacks, start = resumable_callbacks(
        tmp_path, backup_every=3, checkpoint="best.weights.h5", monitor="val_accuracy", mode="max",
        tensorboard=False,
    )
    assert [type(c) for c in callbacks] == [
        keras.callbacks.BackupAndRestore, InitialStep, keras.callbacks.ModelCheckpoint,
    ]
    backup, checkpoint = callbacks[0], callbacks[2]
    assert start is callbacks[1]
    assert backup.backup_dir == str(tmp_path / "backup") and backup.save_freq == 3
    assert checkpoint.filepath == str(tmp_path / "checkpoints" / "best.weights.h5")
    assert checkpoint.monitor == "val_accuracy" and checkpoint.save_best_only
    assert checkpoint.save_weights_only
    assert checkpoint.mode == "max"

    callbacks, _ = resumable_callbacks(str(tmp_path), checkpoint="epoch_{epoch:02d}.keras",
                                       save_best_only=False, tensorboard=False)
    assert callbacks[0].save_freq == "epoch"
    assert not callbacks[2].save_weights_only and not callbacks[2].save_best_only
    assert len(resumable_callbacks(tmp_path, checkpoint=None, tensorboard=False)[0]) == 2


def test_resumable_callbacks_checkpoint_keeps_the_best_epoch(tmp_path):
    x, y = data(5)
    model = small_model()
    callbacks, _ = resumable_callbacks(tmp_path, checkpoint="best.weights.h5", tensorboard=False)
    history = model.fit(x, y, batch_size=4, epochs=3, validation_data=(x, y), verbose=0, callbacks=callbacks)
    assert len(history.history["val_loss"]) == 3
    best = small_model(compile=False)
    best.load_weights(tmp_path / "checkpoints" / "best.weights.h5")
    best_loss = float(np.mean((keras.ops.convert_to_numpy(best(x)) - y) ** 2))
    np.testing.assert_allclose(best_loss, min(history.history["val_loss"]), rtol=1e-4)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None or importlib.util.find_spec("tensorflow") is None,
    reason="TensorBoard logs need tensorflow and tensorboard",
)
def test_resumable_callbacks_tensorboard_writes_logs(tmp_path):
    x, y = data(2)
    callbacks, _ = resumable_callbacks(tmp_path, checkpoint=None, tensorboard=True)
    assert isinstance(callbacks[-1], keras.callbacks.TensorBoard)
    small_model().fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=callbacks)
    events = os.listdir(tmp_path / "logs" / "train")
    assert any(name.startswith("events.out.tfevents") for name in events), events


def test_resumable_callbacks_tensorboard_auto_without_the_package(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    callbacks, _ = resumable_callbacks(tmp_path, tensorboard="auto")
    assert not any(isinstance(c, keras.callbacks.TensorBoard) for c in callbacks)
    with pytest.raises(ImportError, match="tensorboard"):
        resumable_callbacks(tmp_path, tensorboard=True)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(steps=0), "steps"),
        (dict(steps=2.0), "steps"),
        (dict(steps=True), "steps"),
        (dict(steps=3, exit_code=256), "exit_code"),
        (dict(steps=3, exit_code="3"), "exit_code"),
        (dict(steps=3, verbose=2), "verbose"),
    ],
)
def test_stop_after_steps_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}` must be.*Received: {name}="):
        StopAfterSteps(**kwargs)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(directory=""), "directory"),
        (dict(directory=None), "directory"),
        (dict(directory="run", backup_every=0), "backup_every"),
        (dict(directory="run", backup_every="batch"), "backup_every"),
        (dict(directory="run", checkpoint="best.h5"), "checkpoint"),
        (dict(directory="run", mode="largest"), "mode"),
        (dict(directory="run", tensorboard="yes"), "tensorboard"),
        (dict(directory="run", verbose=3), "verbose"),
    ],
)
def test_resumable_callbacks_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}` must be.*Received: {name}="):
        resumable_callbacks(**kwargs)
