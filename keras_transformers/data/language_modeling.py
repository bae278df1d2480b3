"""Language-modelling data: Tiny Shakespeare as characters or GPT-2 BPE tokens, in windows.

Next-token prediction (Radford et al. 2019, equation 1): each window of `sequence_length + 1`
tokens gives the inputs (all but the last) and the targets (all but the first).
"""

import importlib.resources
import os

import numpy as np
import tensorflow as tf

TINY_SHAKESPEARE_PATH = os.path.join("tinyshakespeare", "input.txt")
GPT2_BPE_FILES = (os.path.join("gpt2-bpe", "encoder.json"), os.path.join("gpt2-bpe", "vocab.bpe"))
# Tiny Shakespeare is ASCII (65 distinct characters): Unicode code points below 128 cover it.
CHARACTER_VOCABULARY_SIZE = 128


def load_tiny_shakespeare(data_dir=None, download=False, packaged_sample=False):
    """Returns the Tiny Shakespeare text and where it came from.

    Looked for, in order: `<data_dir>/tinyshakespeare/input.txt` (or
    `<data_dir>/input.txt`); with `download`, TFDS `tiny_shakespeare` (which
    downloads the same file, or takes it from a TFDS manual folder; its three
    splits are joined back in order); with `packaged_sample`, the first ~20 KB
    packaged with this library (also when TFDS fails: `source` then says why).

    The local file is read directly rather than through TFDS, which would copy it
    into its own data folder first. TFDS accepts the same file (same sha256) offline
    as a manual download: `tfds.builder("tiny_shakespeare").download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=<folder with input.txt>))`,
    after which `download=True` finds it; this needs the `importlib_resources` package
    (in this project's `test` extras).

    Args:
        data_dir: a folder holding `tinyshakespeare/input.txt`, or None.
        download: whether to fall back on `tensorflow_datasets` (internet, or a
            dataset TFDS has already prepared).
        packaged_sample: whether to fall back on the packaged sample.

    Returns:
        (text, source): the text as a str and a description of its origin.

    Raises:
        FileNotFoundError: when no source is found; it names the TFDS error, if any.

    Example:

    >>> text, source = load_tiny_shakespeare(None, packaged_sample=True)
    >>> text[:14], source
    ('First Citizen:', 'packaged sample (keras_transformers/data)')
    """
    if data_dir is not None:
        for path in (os.path.join(data_dir, TINY_SHAKESPEARE_PATH), os.path.join(data_dir, "input.txt")):
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    return f.read(), os.path.normpath(path)
    missing = f"No {TINY_SHAKESPEARE_PATH} under data_dir={data_dir!r}"
    tfds_error = None
    if download:
        try:
            import tensorflow_datasets as tfds

            splits = tfds.load("tiny_shakespeare", split=["train", "validation", "test"])
            text = "".join(next(iter(split))["text"].numpy().decode("utf-8") for split in splits)
            return text, "tfds tiny_shakespeare"
        # Offline, TFDS fails in many ways (DNS, HTTP, missing modules): any of them
        # means "no download" when the packaged sample may stand in.
        except Exception as error:
            lines = str(error).strip().splitlines()
            tfds_error = type(error).__name__ + (f": {lines[0][:200]}" if lines else "")
            if not packaged_sample:
                raise FileNotFoundError(
                    f"{missing}, and TFDS tiny_shakespeare failed ({tfds_error}). Put the text "
                    f"(karpathy/char-rnn's data/tinyshakespeare/input.txt) at "
                    f"<data_dir>/{TINY_SHAKESPEARE_PATH}, or prepare TFDS offline with "
                    "tfds.builder('tiny_shakespeare').download_and_prepare(download_config="
                    "tfds.download.DownloadConfig(manual_dir=<folder holding input.txt>))."
                ) from error
    if packaged_sample:
        sample = importlib.resources.files("keras_transformers") / "data" / "tinyshakespeare_sample.txt"
        source = "packaged sample (keras_transformers/data)"
        if tfds_error:
            source += f"; TFDS tiny_shakespeare failed: {tfds_error}"
        return sample.read_text(encoding="utf-8"), source
    raise FileNotFoundError(f"{missing}; pass download=True for TFDS tiny_shakespeare.")


def character_tokenizer():
    """A character-level tokenizer: Unicode code points below 128 (keras-hub).

    Example:

    >>> tokenizer = character_tokenizer()
    >>> [int(i) for i in tokenizer("Hi!")], tokenizer.detokenize([72, 105, 33])
    ([72, 105, 33], 'Hi!')
    """
    import keras_hub

    return keras_hub.tokenizers.UnicodeCodepointTokenizer(
        vocabulary_size=CHARACTER_VOCABULARY_SIZE, lowercase=False, dtype="int32"
    )


def gpt2_bpe_tokenizer(data_dir):
    """GPT-2's byte-level BPE tokenizer (50,257 tokens) from `<data_dir>/gpt2-bpe`.

    OpenAI's `encoder.json` and `vocab.bpe`, read by
    `keras_transformers.convert.gpt2.bpe_tokenizer`.
    """
    from keras_transformers.convert.gpt2 import bpe_tokenizer

    vocabulary, merges = (os.path.join(data_dir, name) for name in GPT2_BPE_FILES)
    return bpe_tokenizer(vocabulary, merges)


def tokenize(text, tokenizer, chunk_lines=2000):
    """Token ids of a whole text, as one int32 numpy array.

    The text is cut after a blank line into chunks of about `chunk_lines` lines,
    tokenized as a batch inside tf.data and joined: GPT-2's pre-tokenization never
    joins the whitespace at the end of a chunk to the word that starts the next,
    so the ids equal one call on the whole text.

    Example:

    >>> tokenize("ab\\n\\ncd", character_tokenizer(), chunk_lines=1).tolist()
    [97, 98, 10, 10, 99, 100]
    """
    lines = text.splitlines(keepends=True)
    chunks, current = [], []
    for line in lines:
        current.append(line)
        if len(current) >= chunk_lines and line.strip() == "":
            chunks.append("".join(current))
            current = []
    if current:
        chunks.append("".join(current))
    dataset = tf.data.Dataset.from_tensor_slices(chunks).batch(64).map(tokenizer)
    ids = [np.asarray(row, "int32") for batch in dataset for row in batch.to_list()]
    return np.concatenate(ids).astype("int32") if ids else np.zeros((0,), "int32")


def split_ids(ids, validation_fraction=0.1):
    """The first (1 - validation_fraction) of the tokens for training, the rest for validation.

    With 0.1 on Tiny Shakespeare's characters, the training part is exactly TFDS's
    `train` split and the validation part its `validation` + `test`.

    Example:

    >>> train, validation = split_ids(np.arange(10), 0.2)
    >>> train.tolist(), validation.tolist()
    ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(
            "`validation_fraction` must be in (0, 1). "
            f"Received: validation_fraction={validation_fraction!r}"
        )
    split = int(len(ids) * (1 - validation_fraction))
    return ids[:split], ids[split:]


def _window_example(window):
    # (T + 1,) -> inputs (T,) and next-token targets (T,); no padding in a window.
    inputs = window[:-1]
    return {"token_ids": inputs, "padding_mask": tf.ones_like(inputs)}, window[1:]


def _check_windows(ids, sequence_length, batch_size):
    for name, value in (("sequence_length", sequence_length), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    if len(ids) < sequence_length + 1:
        raise ValueError(
            f"`ids` must hold at least sequence_length + 1 = {sequence_length + 1} tokens. "
            f"Received: {len(ids)} tokens"
        )


def training_windows(ids, sequence_length, batch_size, seed=0):
    """An endless, seeded stream of random windows, batched, for `fit(steps_per_epoch=...)`.

    Each example starts at a uniformly random position (nanoGPT's `get_batch`),
    so an "epoch" is whatever number of steps `fit` is told.

    Args:
        ids: int token ids (numpy).
        sequence_length: tokens per input window (T).
        batch_size: windows per batch (B).
        seed: seed of the start positions.

    Returns:
        A `tf.data.Dataset` of ({"token_ids": int32 (B, T), "padding_mask":
        int32 (B, T) of ones}, targets int32 (B, T)).

    Example:

    >>> dataset = training_windows(np.arange(100, dtype="int32"), 8, batch_size=2)
    >>> inputs, targets = next(iter(dataset))
    >>> tuple(inputs["token_ids"].shape), bool((targets - inputs["token_ids"] == 1).numpy().all())
    ((2, 8), True)
    """
    _check_windows(ids, sequence_length, batch_size)
    ids = tf.constant(np.asarray(ids, "int32"))
    num_starts = int(ids.shape[0]) - sequence_length

    def window(random_value):
        start = tf.math.floormod(random_value, num_starts)
        return ids[start : start + sequence_length + 1]

    return (
        tf.data.Dataset.random(seed=seed)
        .map(window)
        .map(_window_example)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def evaluation_windows(ids, sequence_length, batch_size, max_windows=None):
    """Every non-overlapping window of `ids`, in order, batched (the last batch may be short).

    Each token is predicted once, so the mean loss is the loss per token of the
    text (tokens at the start of a window see less context than in generation).

    Args:
        ids: int token ids (numpy).
        sequence_length: tokens per input window.
        batch_size: windows per batch.
        max_windows: keep only the first this many windows (for quick checks).

    Returns:
        A finite `tf.data.Dataset` shaped as `training_windows`'.

    Example:

    >>> dataset = evaluation_windows(np.arange(20, dtype="int32"), 4, batch_size=3)
    >>> [int(inputs["token_ids"].shape[0]) for inputs, _ in dataset]
    [3, 1]
    """
    _check_windows(ids, sequence_length, batch_size)
    count = (len(ids) - 1) // sequence_length
    if max_windows is not None:
        count = min(count, max_windows)
    starts = np.arange(count) * sequence_length
    windows = np.asarray(ids, "int32")[starts[:, None] + np.arange(sequence_length + 1)]  # (N, T + 1)
    return (
        tf.data.Dataset.from_tensor_slices(windows)
        .map(_window_example)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
