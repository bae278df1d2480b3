"""Multi30k translation data: reading, subword vocabularies and teacher-forcing batches.

Multi30k: Elliott et al., "Multi30K: Multilingual English-German Image Descriptions" (2016),
task 1 (29,000 / 1,014 / 1,000 caption pairs). Subwords: WordPiece (Wu et al. 2016) trained
with keras-hub on the training split.
"""

import gzip
import os
import re

import keras_hub
import numpy as np
import tensorflow as tf

from keras_transformers.data._buckets import bucket_and_pad
from keras_transformers.data._word_piece import cached_word_piece_vocabulary

# [PAD] must be id 0: padded batches pad with zeros, and masks treat 0 as padding.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[START]", "[END]")
PAD_ID, UNK_ID, START_ID, END_ID = range(4)
MULTI30K_SPLITS = ("train", "val", "test_2016_flickr")
# Where users with internet get the same files (only used when they are absent locally).
MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"


def read_multi30k(data_dir, split, language, download=False):
    """Reads one side of a Multi30k task-1 split, one caption per line.

    Args:
        data_dir: folder holding `{split}.{language}.gz` (the layout of the
            multi30k/dataset repository's data/task1/raw).
        split: "train", "val" or "test_2016_flickr".
        language: "en", "de" or "fr".
        download: when the file is absent, fetch it from `MULTI30K_URL` into
            `data_dir` (needs internet); otherwise a missing file raises.

    Returns:
        A list of str, the captions stripped of their line ends.

    Example:

    >>> import gzip, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with gzip.open(os.path.join(folder, "val.de.gz"), "wt", encoding="utf-8") as f:
    ...     _ = f.write("Ein Hund rennt.\\nZwei Kinder spielen.\\n")
    >>> read_multi30k(folder, "val", "de")
    ['Ein Hund rennt.', 'Zwei Kinder spielen.']
    """
    if split not in MULTI30K_SPLITS:
        raise ValueError(f"`split` must be one of {list(MULTI30K_SPLITS)}. Received: split={split!r}")
    if language not in ("en", "de", "fr"):
        raise ValueError(f"`language` must be 'en', 'de' or 'fr'. Received: language={language!r}")
    path = os.path.join(data_dir, f"{split}.{language}.gz")
    if not os.path.exists(path):
        if not download:
            raise FileNotFoundError(
                f"`data_dir` must hold {split}.{language}.gz. Received: data_dir={data_dir!r}"
            )
        import keras

        os.makedirs(data_dir, exist_ok=True)
        path = keras.utils.get_file(
            fname=os.path.basename(path),
            origin=MULTI30K_URL + os.path.basename(path),
            cache_dir=os.path.abspath(data_dir),
            cache_subdir="",
        )
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f]


def load_multi30k(data_dir, split, source="de", target="en", download=False):
    """The aligned (source captions, target captions) of a Multi30k split.

    Example:

    >>> import gzip, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for language, text in (("de", "Ein Hund rennt.\\n"), ("en", "A dog runs.\\n")):
    ...     with gzip.open(os.path.join(folder, f"val.{language}.gz"), "wt") as f:
    ...         _ = f.write(text)
    >>> load_multi30k(folder, "val")
    (['Ein Hund rennt.'], ['A dog runs.'])
    """
    sources = read_multi30k(data_dir, split, source, download)
    targets = read_multi30k(data_dir, split, target, download)
    if len(sources) != len(targets):
        raise ValueError(
            f"The {split} split's {source} and {target} files must have as many lines. "
            f"Received: {len(sources)} and {len(targets)} lines"
        )
    return sources, targets


def word_piece_vocabulary(texts, vocabulary_size, path=None, lowercase=True):
    """Trains a WordPiece vocabulary with keras-hub, or reads the one cached at `path`.

    The vocabulary starts with `SPECIAL_TOKENS` ([PAD] = 0, [UNK], [START],
    [END]). keras-hub's learner may return fewer than `vocabulary_size` tokens
    on a small corpus. Training on the 58,000 Multi30k training captions (both
    languages) takes about two minutes on one CPU core, hence the cache.

    Args:
        texts: a list of str (for a shared source/target vocabulary, both sides).
        vocabulary_size: the largest vocabulary wanted.
        path: a `vocab.txt` (one token a line) read when it exists, else written.
        lowercase: lowercase (and case-fold) the text before learning.

    Returns:
        The vocabulary as a list of str.

    Example:

    >>> vocabulary = word_piece_vocabulary(["a dog runs", "a dog sits"], 40)
    >>> vocabulary[:6], "##g" in vocabulary
    (['[PAD]', '[UNK]', '[START]', '[END]', 'a', 'd'], True)
    """
    return cached_word_piece_vocabulary(
        texts, vocabulary_size, path, SPECIAL_TOKENS, lowercase=lowercase
    )


def word_piece_tokenizer(vocabulary, lowercase=True):
    """A keras-hub `WordPieceTokenizer` over `vocabulary` (a list or a vocab.txt path).

    Example:

    >>> tokenizer = word_piece_tokenizer(["[PAD]", "[UNK]", "[START]", "[END]", "a", "dog"])
    >>> tokenizer(["A dog"])
    [[4, 5]]
    """
    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=vocabulary, lowercase=lowercase, oov_token="[UNK]"
    )


def detokenize(tokenizer, token_ids):
    """Token ids (B, T) -> sentences: cut at [END], drop specials, rejoin word pieces.

    WordPiece splits off every punctuation mark, so "man's" comes back as
    "man ' s"; the apostrophe and hyphen are glued back (`join_punctuation`) so
    that BLEU's tokenizer sees the same words as in the references.

    Example:

    >>> tokenizer = word_piece_tokenizer(
    ...     ["[PAD]", "[UNK]", "[START]", "[END]", "a", "dog", "'", "s", "##gy", "."])
    >>> detokenize(tokenizer, [[2, 4, 5, 8, 6, 7, 9, 3, 5, 0]])
    ["a doggy's ."]
    """
    sentences = []
    for row in np.asarray(token_ids).tolist():
        if END_ID in row:
            row = row[: row.index(END_ID)]
        row = [token for token in row if token >= len(SPECIAL_TOKENS)]
        # Eager keras-hub tokenizers return python lists of str.
        text = tokenizer.detokenize([row])[0] if row else ""
        sentences.append(join_punctuation(text))
    return sentences


def join_punctuation(text):
    """Glues apostrophes and hyphens back to their words: "man ' s t - shirt" -> "man's t-shirt".

    Example:

    >>> join_punctuation("a man ' s t - shirt .")
    "a man's t-shirt ."
    """
    return re.sub(r" ?([-']) ?", r"\1", text)


def _teacher_forcing(source_ids, target_ids, max_length):
    """One pair of ragged id rows -> model inputs, labels and loss weights."""
    # The source ends with [END] (as tensor2tensor's EOS); the decoder reads
    # [START] + target and predicts target + [END] (teacher forcing).
    source = tf.concat([source_ids[: max_length - 1], [END_ID]], axis=0)
    target = target_ids[: max_length - 1]
    decoder_input = tf.concat([[START_ID], target], axis=0)
    labels = tf.concat([target, [END_ID]], axis=0)
    inputs = {
        "encoder_token_ids": source,
        "encoder_padding_mask": tf.ones_like(source),
        "decoder_token_ids": decoder_input,
        "decoder_padding_mask": tf.ones_like(decoder_input),
    }
    return inputs, labels, tf.ones_like(labels, dtype="float32")


def translation_dataset(
    source_texts,
    target_texts,
    tokenizer,
    batch_size,
    max_length=64,
    shuffle=False,
    seed=0,
    bucket_boundaries=(16, 24, 32, 48),
    drop_remainder=False,
):
    """Teacher-forcing batches for `models.transformer.transformer` and `fit`.

    Each element is (inputs, labels, sample_weight):
    inputs = {"encoder_token_ids": source + [END], "encoder_padding_mask",
    "decoder_token_ids": [START] + target, "decoder_padding_mask"} (int32
    (B, L)), labels = target + [END] (int32 (B, L)) and sample_weight (float32
    (B, L)), 1 on real label positions and 0 on padding, so padding stays out of
    the loss. Sequences are cut to `max_length` tokens. Pairs are grouped by
    length and padded (with 0 = [PAD]) to the bucket's bound (the first of
    `bucket_boundaries` + [max_length] that holds both sides), so a compiled
    training step sees only a few shapes.

    Args:
        source_texts, target_texts: aligned lists of str.
        tokenizer: a tokenizer mapping strings to ragged ids (a keras-hub
            `WordPieceTokenizer`, from `word_piece_tokenizer`).
        batch_size: pairs per batch.
        max_length: the longest source or target kept, in tokens (specials
            included).
        shuffle: shuffle the pairs (each epoch anew) before grouping them.
        seed: the shuffle seed.
        bucket_boundaries: increasing lengths < max_length that batches are
            padded to.
        drop_remainder: drop each bucket's last partial batch (fewer shapes to
            compile when training).

    Returns:
        A `tf.data.Dataset`.

    Example:

    >>> tokenizer = word_piece_tokenizer(
    ...     ["[PAD]", "[UNK]", "[START]", "[END]", "ein", "hund", "a", "dog", "."])
    >>> dataset = translation_dataset(["Ein Hund."], ["A dog."], tokenizer, batch_size=2,
    ...                               bucket_boundaries=(6,))
    >>> inputs, labels, weights = next(iter(dataset))
    >>> inputs["encoder_token_ids"].numpy().tolist(), inputs["decoder_token_ids"].numpy().tolist()
    ([[4, 5, 8, 3, 0, 0]], [[2, 6, 7, 8, 0, 0]])
    >>> labels.numpy().tolist(), weights.numpy().tolist()
    ([[6, 7, 8, 3, 0, 0]], [[1.0, 1.0, 1.0, 1.0, 0.0, 0.0]])
    """
    if len(source_texts) != len(target_texts):
        raise ValueError(
            "`source_texts` and `target_texts` must have the same length. Received: "
            f"{len(source_texts)} and {len(target_texts)} texts"
        )
    pairs = tf.data.Dataset.from_tensor_slices((list(source_texts), list(target_texts)))
    # Tokenizing 1,000 strings at a time is much faster than one by one.
    pairs = pairs.batch(1000).map(lambda s, t: (tokenizer(s), tokenizer(t))).unbatch()
    pairs = pairs.map(lambda s, t: (tf.cast(s, "int32"), tf.cast(t, "int32"))).cache()
    if shuffle:
        pairs = pairs.shuffle(len(source_texts), seed=seed, reshuffle_each_iteration=True)
    examples = pairs.map(lambda s, t: _teacher_forcing(s, t, max_length))
    batches = bucket_and_pad(examples, bucket_boundaries, max_length, batch_size, drop_remainder)
    return batches.prefetch(tf.data.AUTOTUNE)


def encode_sources(texts, tokenizer, max_length=64):
    """Source sentences -> right-padded numpy inputs for `generation.generate`.

    Returns:
        {"encoder_token_ids": int32 (B, S), "encoder_padding_mask": int32 (B, S)},
        each row the tokens (cut to `max_length` - 1) + [END], then padding; S is
        the longest row.

    Example:

    >>> tokenizer = word_piece_tokenizer(["[PAD]", "[UNK]", "[START]", "[END]", "ein", "hund"])
    >>> encode_sources(["Ein Hund", "Hund"], tokenizer)["encoder_token_ids"].tolist()
    [[4, 5, 3], [5, 3, 0]]
    """
    # Eager keras-hub tokenizers return python lists of ids.
    rows = [list(row[: max_length - 1]) + [END_ID] for row in tokenizer(list(texts))]
    length = max(len(row) for row in rows)
    token_ids = np.zeros((len(rows), length), "int32")
    for i, row in enumerate(rows):
        token_ids[i, : len(row)] = row
    return {"encoder_token_ids": token_ids, "encoder_padding_mask": (token_ids != PAD_ID).astype("int32")}
