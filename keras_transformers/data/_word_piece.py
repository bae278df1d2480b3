"""keras-hub's WordPiece learner with a vocab.txt cache, for the BERT and translation pipelines.

Learning a vocabulary takes minutes on a real corpus (about two on Multi30k's captions), so
each pipeline reads the file a previous run wrote.
"""

import os

import keras_hub
import tensorflow as tf


def cached_word_piece_vocabulary(texts, vocabulary_size, path, reserved_tokens, **options):
    """keras-hub's `compute_word_piece_vocabulary` over `texts`, or the vocabulary at `path`.

    When `path` exists it is read (one token a line, BERT's vocab.txt format) and nothing
    is learned; otherwise the learned vocabulary, starting with `reserved_tokens`, is written
    there (its folder created). `options` go to the learner (`lowercase`, `strip_accents`).
    """
    if path is not None and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(list(texts)).batch(1000),
        vocabulary_size,
        reserved_tokens=list(reserved_tokens),
        **options,
    )
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(vocabulary) + "\n")
    return vocabulary
