"""Learning-rate schedules that Keras does not ship.

`TransformerSchedule` is the warmup-then-inverse-square-root schedule of Vaswani et al.,
"Attention Is All You Need" (2017), section 5.3.
"""

import keras
from keras import ops

from keras_transformers.layers.arguments import check_positive_float, check_positive_int


@keras.saving.register_keras_serializable(package="keras_transformers")
class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The paper's learning rate: linear warmup, then decay as 1/sqrt(step).

    lrate = scale * hidden_dim^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)
    (Vaswani et al. 2017, equation 3, with `scale` = 1). Keras counts optimizer
    steps from 0; the formula's steps count from 1, so the optimizer's step `i`
    gets the rate of step `i + 1` (step 0 would give a rate of 0). The peak,
    hidden_dim^-0.5 * warmup_steps^-0.5, is reached at step `warmup_steps`.

    Args:
        hidden_dim: the model size d_model.
        warmup_steps: number of warmup steps (the paper: 4000).
        scale: a constant factor on the whole schedule (1.0 in the paper; small
            data sets often train better with 0.5-2).

    Example:

    >>> schedule = TransformerSchedule(hidden_dim=512, warmup_steps=4000)
    >>> round(float(schedule(3999)), 6)  # the peak, 512^-0.5 * 4000^-0.5
    0.000699
    >>> optimizer = keras.optimizers.Adam(schedule, beta_2=0.98, epsilon=1e-9)
    """

    def __init__(self, hidden_dim, warmup_steps=4000, scale=1.0):
        check_positive_int(hidden_dim, "hidden_dim")
        check_positive_int(warmup_steps, "warmup_steps")
        check_positive_float(scale, "scale")
        self.hidden_dim = hidden_dim
        self.warmup_steps = warmup_steps
        self.scale = scale

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0  # the paper counts steps from 1
        decay = ops.rsqrt(step)
        warmup = step * float(self.warmup_steps) ** -1.5
        return self.scale * float(self.hidden_dim) ** -0.5 * ops.minimum(decay, warmup)

    def get_config(self):
        return {
            "hidden_dim": self.hidden_dim,
            "warmup_steps": self.warmup_steps,
            "scale": self.scale,
        }
