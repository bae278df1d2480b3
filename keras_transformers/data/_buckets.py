"""Length buckets for tf.data: batches of similar lengths, each padded to a bucket's bound.

Shared by the translation and BERT classification pipelines; padding costs compute in every
layer, and a compiled training step sees only one shape per bound.
"""

import numpy as np
import tensorflow as tf


def bucket_and_pad(examples, bucket_boundaries, max_length, batch_size, drop_remainder=False, lengths=None):
    """Groups examples by length into batches, each padded with 0 to the first bound that holds it.

    An example's length is the longest of its 1-D tensors; its scalars (labels) are batched
    as they are. The bounds are the `bucket_boundaries` below `max_length`, then
    `max_length`; every 1-D tensor of a batch is padded to the smallest bound that holds
    the batch's longest example, so a batch is (B, bound) whatever its content.

    Args:
        examples: a `tf.data.Dataset` of unbatched examples (nests of scalars and 1-D
            tensors no longer than `max_length`).
        bucket_boundaries: increasing lengths; those >= `max_length` are ignored.
        max_length: the last bound.
        batch_size: examples per batch.
        drop_remainder: drop each bucket's last partial batch.
        lengths: the examples' lengths (in any order), when known: the number of
            batches they make becomes the dataset's cardinality, so that Keras' `fit`
            knows the epoch's length (with an unknown one, `fit` on TensorFlow counts
            one optimizer step too many per epoch).

    Returns:
        A `tf.data.Dataset` of padded batches.

    Example:

    >>> examples = tf.data.Dataset.range(1, 4).map(lambda n: tf.fill([n], 7))  # 7, 77, 777
    >>> batches = bucket_and_pad(examples, [2], 4, batch_size=2, lengths=[1, 2, 3])
    >>> int(batches.cardinality()), [x.numpy().tolist() for x in batches]
    (2, [[[7, 0], [7, 7]], [[7, 7, 7, 0]]])
    """
    boundaries = sorted(b for b in bucket_boundaries if b < max_length) + [max_length]

    def length(*example):
        return tf.reduce_max([tf.shape(x)[0] for x in tf.nest.flatten(example) if x.shape.rank == 1])

    # bucket_by_sequence_length puts lengths < bound in a bucket: shift the bounds by one
    # so that an example exactly a bound long stays in that bound's bucket.
    batches = examples.bucket_by_sequence_length(
        element_length_func=length,
        bucket_boundaries=[b + 1 for b in boundaries[:-1]],
        bucket_batch_sizes=[batch_size] * len(boundaries),
        pad_to_bucket_boundary=False,
        drop_remainder=drop_remainder,
    )
    batches = batches.map(lambda *batch: _pad_to_bound(batch, boundaries))
    if lengths is None:
        return batches
    buckets = np.minimum(np.searchsorted(boundaries, np.asarray(lengths)), len(boundaries) - 1)
    sizes = np.bincount(buckets, minlength=len(boundaries))
    count = np.sum(sizes // batch_size if drop_remainder else -(-sizes // batch_size))
    return batches.apply(tf.data.experimental.assert_cardinality(int(count)))


def _pad_to_bound(batch, boundaries):
    """Pads every (B, L) tensor of a batch to the smallest bound that holds its longest row."""
    rows = [x for x in tf.nest.flatten(batch) if x.shape.rank == 2]
    longest = tf.reduce_max([tf.shape(x)[1] for x in rows])
    bounds = tf.constant(boundaries, "int32")
    length = tf.reduce_min(tf.boolean_mask(bounds, bounds >= longest))

    def pad(x):
        if x.shape.rank != 2:
            return x
        return tf.pad(x, [[0, 0], [0, length - tf.shape(x)[1]]])

    padded = tf.nest.map_structure(pad, batch)
    return padded[0] if len(padded) == 1 else padded
