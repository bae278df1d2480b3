"""Scaling past one device: `keras.distribution` layouts for the builders (JAX backend).

`model_parallel(config, mesh_shape)` gives a ready `keras.distribution.ModelParallel`;
`get_layout_map(device_mesh, model_kind)` the `LayoutMap` behind it; `check_mesh`
the size checks it runs first. See README.md, "Scaling past one device".
"""

from keras_transformers.distribution.layout_map import (
    BATCH_AXIS,
    MODEL_AXIS,
    MODEL_KINDS,
    check_mesh,
    get_layout_map,
    layout_rules,
    model_parallel,
    unmatched_paths,
)
