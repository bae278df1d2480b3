"""MNIST from its idx files: a stratified, seeded train/validation split and tf.data batches.

The shared folder holds the real MNIST test set (10,000 digits) recompressed, so TFDS's
`mnist` checksums do not match it: the idx format (LeCun et al.) is read directly, and a
plain tf.data pipeline serves the split (TFDS `mnist` is the fallback for users with
internet, when the files are absent).
"""

import gzip
import os

import numpy as np
import tensorflow as tf

MNIST_TEST_FILES = (
    os.path.join("mnist-test", "t10k-images-idx3-ubyte.gz"),
    os.path.join("mnist-test", "t10k-labels-idx1-ubyte.gz"),
)
# idx type codes (http://yann.lecun.com/exdb/mnist/): 0x08 unsigned byte, ...
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Reads an idx file (gzipped or not) into a numpy array.

    The format: two zero bytes, a type code, the number of dimensions, one
    big-endian int32 size per dimension, then the data in row-major order.

    Example:

    >>> import os, struct, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.idx")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(struct.pack(">BBBBii", 0, 0, 8, 2, 2, 3) + bytes(range(6)))
    >>> read_idx(path).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"`path` must be an idx file. Received: path={path!r}")
    rank = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">i4", count=rank, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    values = np.frombuffer(data, dtype, offset=4 + 4 * rank)
    if values.size != int(np.prod(shape)):
        raise ValueError(
            f"`path` holds {values.size} values but its header says {shape}. Received: path={path!r}"
        )
    return values.reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist_test(data_dir=None, download=False):
    """The 10,000 MNIST test digits: uint8 images (N, 28, 28) and uint8 labels (N,).

    Read from `<data_dir>/mnist-test/`; with `download`, TFDS `mnist`'s test split
    (the same digits) when the files are absent.
    """
    if data_dir is not None:
        images_path, labels_path = (os.path.join(data_dir, name) for name in MNIST_TEST_FILES)
        if os.path.isfile(images_path) and os.path.isfile(labels_path):
            return read_idx(images_path), read_idx(labels_path)
    if download:
        import tensorflow_datasets as tfds

        images, labels = tfds.as_numpy(
            tfds.load("mnist", split="test", batch_size=-1, as_supervised=True)
        )
        return images[..., 0].astype("uint8"), labels.astype("uint8")
    raise FileNotFoundError(
        f"No {MNIST_TEST_FILES[0]} under data_dir={data_dir!r}; pass download=True for TFDS."
    )


def stratified_split(labels, num_validation, seed=0):
    """Indices of a seeded split that keeps each class's share in both parts.

    Each class gives num_validation * (its count / total) validation examples,
    rounded by largest remainder so the total is exact; which ones is a seeded
    shuffle within the class.

    Args:
        labels: int class labels (N,).
        num_validation: size of the validation part, 0 < num_validation < N.
        seed: seed of the shuffle.

    Returns:
        (train_indices, validation_indices), sorted int64 arrays.

    Example:

    >>> labels = np.array([0] * 8 + [1] * 4)
    >>> train, validation = stratified_split(labels, 3, seed=0)
    >>> len(train), np.bincount(labels[validation]).tolist()
    (9, [2, 1])
    """
    labels = np.asarray(labels)
    if isinstance(num_validation, bool) or not isinstance(num_validation, (int, np.integer)) or not (
        0 < num_validation < len(labels)
    ):
        raise ValueError(
            f"`num_validation` must be an int in (0, {len(labels)}). "
            f"Received: num_validation={num_validation!r}"
        )
    classes, counts = np.unique(labels, return_counts=True)
    exact = num_validation * counts / len(labels)
    quota = np.floor(exact).astype(int)
    # Largest remainders first, ties by class order: the quotas sum to num_validation.
    for i in np.argsort(-(exact - quota), kind="stable")[: num_validation - quota.sum()]:
        quota[i] += 1
    rng = np.random.default_rng(seed)
    validation = []
    for label, take in zip(classes, quota):
        members = np.flatnonzero(labels == label)
        validation.append(rng.permutation(members)[:take])
    validation = np.sort(np.concatenate(validation))
    train = np.setdiff1d(np.arange(len(labels)), validation)
    return train, validation


def _augment(images, labels, seed):
    # Random shifts of up to 2 pixels: pad, then crop back to 28 x 28 (seeded, stateless).
    padded = tf.pad(images, [[2, 2], [2, 2], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, tf.shape(images), seed=seed)
    return cropped, labels


def mnist_datasets(
    data_dir=None, batch_size=128, num_validation=2000, seed=0, augment=False, download=False,
    max_examples=None, arrays=None,
):
    """Train and validation tf.data pipelines over MNIST's test set, split stratified.

    Images are float32 in [0, 1], (B, 28, 28, 1), under the key "images" (the
    ViT builder's input); labels int32 (B,). The training set is shuffled each
    epoch (seeded) and, with `augment`, randomly shifted by up to 2 pixels.

    Args:
        data_dir: folder holding `mnist-test/`.
        batch_size: examples per batch.
        num_validation: validation examples (the paper-free default: 2,000 of 10,000).
        seed: seed of the split, the shuffle and the augmentation.
        augment: whether to shift the training images at random.
        download: whether to fall back on TFDS `mnist` (internet).
        max_examples: keep only a stratified subset of this many examples first
            (for smoke runs).
        arrays: the (images, labels) to split instead of reading `data_dir`, shaped
            as `load_mnist_test`'s (e.g. `tfds_builders.mnist_arrays()`).

    Returns:
        (train_dataset, validation_dataset, info): info holds "train_size",
        "validation_size", "train_counts", "validation_counts" (per class) and
        "validation_indices" (into the 10,000 test images).
    """
    images, labels = arrays if arrays is not None else load_mnist_test(data_dir, download=download)
    if max_examples is not None and max_examples < len(labels):
        _, keep = stratified_split(labels, max_examples, seed=seed)
        images, labels = images[keep], labels[keep]
        num_validation = max(1, round(num_validation * max_examples / 10000))
    train_indices, validation_indices = stratified_split(labels, num_validation, seed=seed)
    pixels = (images.astype("float32") / 255.0)[..., None]  # (N, 28, 28, 1)
    labels = labels.astype("int32")

    def as_inputs(x, y):
        return {"images": x}, y

    train = tf.data.Dataset.from_tensor_slices((pixels[train_indices], labels[train_indices]))
    train = train.shuffle(len(train_indices), seed=seed, reshuffle_each_iteration=True)
    if augment:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        train = tf.data.Dataset.zip((train, seeds)).map(
            lambda example, s: _augment(example[0], example[1], s), num_parallel_calls=tf.data.AUTOTUNE
        )
    train = train.batch(batch_size, drop_remainder=True).map(as_inputs).prefetch(tf.data.AUTOTUNE)
    validation = (
        tf.data.Dataset.from_tensor_slices((pixels[validation_indices], labels[validation_indices]))
        .batch(batch_size)
        .map(as_inputs)
        .prefetch(tf.data.AUTOTUNE)
    )
    info = {
        "train_size": int(len(train_indices)),
        "validation_size": int(len(validation_indices)),
        "train_counts": np.bincount(labels[train_indices], minlength=10).tolist(),
        "validation_counts": np.bincount(labels[validation_indices], minlength=10).tolist(),
        "validation_indices": validation_indices,
    }
    return train, validation, info
