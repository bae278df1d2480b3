"""Training callbacks: stop after a number of optimizer steps, record where a resumed run starts.

`resumable_callbacks` puts Keras' `BackupAndRestore`, `ModelCheckpoint` and `TensorBoard`
in the order a resumable run needs, with an `InitialStep` that reports the step it resumed at.
"""

import importlib.util
import os
import sys

import keras
from keras import ops

from keras_transformers.layers.arguments import check_choice, check_positive_int


def _optimizer_step(model):
    return int(ops.convert_to_numpy(model.optimizer.iterations))


class StopAfterSteps(keras.callbacks.Callback):
    """Stops training once the optimizer has taken `steps` steps.

    Counts the optimizer's steps (`model.optimizer.iterations`), not the batches of one
    `fit` call: a run resumed from a backup at step 600 with `steps=1000` stops after 400
    more batches, at the same step as a run that never stopped. The check comes after each
    batch, so at least one batch runs.

    With `exit_code=None`, training stops cleanly: `fit` returns after that batch (and the
    validation of the epoch, when `fit` has validation data), and `on_train_end` runs, which
    for `BackupAndRestore` deletes the backup. With an int, the process ends at once with
    `os._exit(exit_code)`, without any cleanup, as a crash or a kill would: the way to test
    that a run resumes from its backup.

    Args:
        steps: positive int, the optimizer step to stop at.
        exit_code: None (stop `fit`) or an int in [0, 255] (end the process).
        verbose: 0 (silent) or 1 (print a line when it stops).

    Example:

    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> x, y = np.zeros((40, 2)), np.zeros((40, 1))
    >>> history = model.fit(x, y, batch_size=4, epochs=3, verbose=0,
    ...                     callbacks=[StopAfterSteps(13)])
    >>> int(model.optimizer.iterations), len(history.history["loss"])
    (13, 2)
    """

    def __init__(self, steps, exit_code=None, verbose=0):
        super().__init__()
        check_positive_int(steps, "steps")
        if exit_code is not None and (
            isinstance(exit_code, bool) or not isinstance(exit_code, int) or not 0 <= exit_code <= 255
        ):
            raise ValueError(f"`exit_code` must be None or an int in [0, 255]. Received: exit_code={exit_code!r}")
        check_choice(verbose, "verbose", (0, 1))
        self.steps = steps
        self.exit_code = exit_code
        self.verbose = verbose

    def on_train_batch_end(self, batch, logs=None):
        step = _optimizer_step(self.model)
        if step < self.steps:
            return
        if self.exit_code is None:
            self.model.stop_training = True
            if self.verbose:
                print(f"\nstopping at optimizer step {step} (StopAfterSteps({self.steps}))", flush=True)
            return
        if self.verbose:
            print(f"\ninterrupted after step {step}: exit code {self.exit_code} "
                  f"(StopAfterSteps({self.steps}))", flush=True)
        sys.stderr.flush()
        os._exit(self.exit_code)


class InitialStep(keras.callbacks.Callback):
    """Records the optimizer step at which `fit` starts: 0, or more after a resume.

    Place it after `keras.callbacks.BackupAndRestore` in the callbacks list: that callback
    restores the weights and the optimizer's state (its step included) in its own
    `on_train_begin`, which must run first.

    Attributes:
        initial_step: the optimizer step when the last `fit` began (None before any).

    Args:
        verbose: 0 (silent) or 1 (print the step when training begins).

    Example:

    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> start = InitialStep()
    >>> x, y = np.zeros((8, 2)), np.zeros((8, 1))
    >>> _ = model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[start])
    >>> _ = model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[start])
    >>> start.initial_step  # the second fit went on from the first one's 2 steps
    2
    """

    def __init__(self, verbose=0):
        super().__init__()
        check_choice(verbose, "verbose", (0, 1))
        self.verbose = verbose
        self.initial_step = None

    def on_train_begin(self, logs=None):
        self.initial_step = _optimizer_step(self.model)
        if self.verbose:
            resumed = " (resumed)" if self.initial_step else ""
            print(f"training starts at optimizer step {self.initial_step}{resumed}", flush=True)


def tensorboard_available():
    """Whether `keras.callbacks.TensorBoard` can write here: it writes through `tf.summary`,
    which needs both the tensorflow and the tensorboard packages."""
    return all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "tensorboard"))


def resumable_callbacks(
    directory,
    backup_every="epoch",
    checkpoint="best.keras",
    monitor="val_loss",
    mode="auto",
    save_best_only=True,
    tensorboard="auto",
    verbose=0,
):
    """The callbacks of a run that can be killed and started again, and its `InitialStep`.

    In this order (the order matters):

    1. `keras.callbacks.BackupAndRestore(directory/backup, save_freq=backup_every)`: first,
       so that it restores the weights, the optimizer's state and the epoch before the other
       callbacks begin. Keras restarts the interrupted epoch from its first batch, with the
       backed-up weights and optimizer state. The backup is deleted when `fit` ends normally.
    2. `InitialStep(verbose)`: the optimizer step training starts from (> 0 when resumed).
    3. `keras.callbacks.ModelCheckpoint(directory/checkpoints/<checkpoint>)`, unless
       `checkpoint` is None; a name ending in `.weights.h5` saves the weights only.
    4. `keras.callbacks.TensorBoard(directory/logs)`: with `tensorboard=True`, or
       `"auto"` when `tensorboard_available()`.

    Args:
        directory: the run's folder (str or path).
        backup_every: `"epoch"` or a positive int, batches between backups.
        checkpoint: the checkpoint's file name (it may hold Keras' `{epoch}` fields), ending
            in `.keras` or `.weights.h5`; None for no checkpoint.
        monitor: the metric `ModelCheckpoint` compares, such as `"val_loss"`.
        mode: `"auto"`, `"min"` or `"max"`: whether a smaller or a larger `monitor` is better.
        save_best_only: keep only the best epoch's checkpoint (else one each epoch).
        tensorboard: True, False or `"auto"`.
        verbose: 0 or 1, for `InitialStep`.

    Returns:
        `(callbacks, initial_step)`: the list to pass to `fit` (append any others to it) and
        its `InitialStep`, whose `initial_step` is set once `fit` begins.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> run = tempfile.mkdtemp()
    >>> callbacks, start = resumable_callbacks(run, backup_every=2, tensorboard=False)
    >>> [type(c).__name__ for c in callbacks]
    ['BackupAndRestore', 'InitialStep', 'ModelCheckpoint']
    >>> x, y = np.zeros((8, 2)), np.zeros((8, 1))
    >>> _ = model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), verbose=0,
    ...               callbacks=callbacks)
    >>> start.initial_step, sorted(os.listdir(run))  # the backup is gone: fit finished
    (0, ['checkpoints'])
    """
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise ValueError(f"`directory` must be a non-empty str or path. Received: directory={directory!r}")
    if backup_every != "epoch":
        try:
            check_positive_int(backup_every, "backup_every")
        except ValueError:
            raise ValueError(
                f"`backup_every` must be 'epoch' or a positive int. Received: backup_every={backup_every!r}"
            ) from None
    if checkpoint is not None and (
        not isinstance(checkpoint, str) or not checkpoint.endswith((".keras", ".weights.h5"))
    ):
        raise ValueError(
            "`checkpoint` must be None or a file name ending in '.keras' or '.weights.h5'. "
            f"Received: checkpoint={checkpoint!r}"
        )
    check_choice(mode, "mode", ("auto", "min", "max"))
    check_choice(tensorboard, "tensorboard", (True, False, "auto"))
    if tensorboard is True and not tensorboard_available():
        raise ImportError(
            "tensorboard=True needs the tensorflow and tensorboard packages "
            "(`pip install tensorflow tensorboard`); or pass tensorboard='auto'."
        )
    directory = os.fspath(directory)
    initial_step = InitialStep(verbose=verbose)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(directory, "backup"), save_freq=backup_every),
        initial_step,
    ]
    if checkpoint is not None:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                os.path.join(directory, "checkpoints", checkpoint),
                monitor=monitor,
                mode=mode,
                save_best_only=save_best_only,
                save_weights_only=checkpoint.endswith(".weights.h5"),
            )
        )
    if tensorboard is True or (tensorboard == "auto" and tensorboard_available()):
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(directory, "logs")))
    return callbacks, initial_step
