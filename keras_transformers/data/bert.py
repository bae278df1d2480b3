"""BERT data: masked-LM + next-sentence pretraining examples, and sentence classification.

Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding" (2019), section 3.1 and appendix A.1. Corpora read here: AG News (Zhang et
al. 2015) for pretraining, SST-2 (Socher et al. 2013) for fine-tuning.
"""

import html
import os
import re

import keras_hub
import numpy as np
import tensorflow as tf

from keras_transformers.data._buckets import bucket_and_pad
from keras_transformers.data._word_piece import cached_word_piece_vocabulary

# The special tokens of BERT's vocabularies (and keras-hub's WordPiece learner's default).
SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")
IS_NEXT, NOT_NEXT = 0, 1  # bert_pretraining's NSP labels


def clean_text(text):
    """Undoes AG News' escaping (" #39;" for "'", "&lt;" ...) and squeezes whitespace.

    Example:

    >>> clean_text("It #39;s over &amp; done.  \\\\ Really")
    "It's over & done. Really"
    """
    text = re.sub(r"\s?#(\d+);", lambda match: chr(int(match.group(1))), text)
    text = html.unescape(text).replace("\\", " ")
    return " ".join(text.split())


def split_sentences(text):
    """Splits text into sentences after ".", "!" or "?" followed by a capital or a quote.

    Example:

    >>> split_sentences("Stocks fell. Oil rose 3.5 percent! Why? \\"Fear,\\" he said.")
    ['Stocks fell.', 'Oil rose 3.5 percent!', 'Why?', '"Fear," he said.']
    """
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9])", text.strip()) if s]


def read_agnews_rows(path):
    """Reads an AG News tsv (`text<TAB>label`, no header) as raw (text, label name) rows.

    The text is kept as in the file, AG News' escapes (" #39;", "\\") included, as
    TFDS `ag_news_subset` keeps them in its "description".

    Example:

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "agnews.tsv"
    >>> _ = path.write_text("It #39;s over.\\tSci/Tech\\nA win.\\tSports\\n")
    >>> read_agnews_rows(path)
    [('It #39;s over.', 'Sci/Tech'), ('A win.', 'Sports')]
    """
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            row = tuple(line.rstrip("\r\n").rsplit("\t", 1))
            if len(row) != 2:
                raise ValueError(
                    f"`path` must be an AG News tsv (text<TAB>label). Received: path={path!r} "
                    f"with no tab on line {number}"
                )
            rows.append(row)
    return rows


def to_documents(texts, limit=None):
    """Article texts -> documents of sentences (`clean_text`, then `split_sentences`).

    Texts that leave no sentence are dropped; `limit` keeps the first `limit` documents.

    Example:

    >>> to_documents(["Stocks fell. Oil rose.", " ", "A win."])
    [['Stocks fell.', 'Oil rose.'], ['A win.']]
    """
    result = []
    for text in texts:
        if limit is not None and len(result) >= limit:
            break
        sentences = split_sentences(clean_text(text))
        if sentences:
            result.append(sentences)
    return result


def read_agnews(path, limit=None):
    """Reads an AG News tsv (`text<TAB>label`, no header) as documents of sentences.

    Args:
        path: the .tsv file.
        limit: keep the first `limit` articles only.

    Returns:
        A list of documents, each a list of sentence strings.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "agnews.tsv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("Stocks fell. Oil rose.\\tBusiness\\nA win.\\tSports\\n")
    >>> read_agnews(path)
    [['Stocks fell.', 'Oil rose.'], ['A win.']]
    """
    return to_documents((text for text, _ in read_agnews_rows(path)), limit)


def read_sst2(path):
    """Reads an SST-2 tsv: a header, then `label<TAB>sentence` rows (CRLF or LF ends).

    The header's first column must be "label" (the copy in ../shared/data names
    the second "sentence" in train.tsv and "content" in dev.tsv).

    Returns:
        (sentences: list of str, labels: int32 numpy array of 0/1).

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "train.tsv")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(b"label\\tsentence\\r\\n0\\tdull , flat\\r\\n1\\ta gem\\r\\n")
    >>> read_sst2(path)
    (['dull , flat', 'a gem'], array([0, 1], dtype=int32))
    """
    sentences, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        if len(header) != 2 or header[0] != "label":
            raise ValueError(
                f"`path` must be an SST-2 tsv with the header 'label<TAB>sentence'. "
                f"Received: path={path!r} with header {header}"
            )
        for line in f:
            line = line.rstrip("\r\n")
            if line:
                label, sentence = line.split("\t", 1)
                labels.append(int(label))
                sentences.append(sentence)
    return sentences, np.asarray(labels, "int32")


def nsp_pairs(documents, seed=0, duplicates=1):
    """Next-sentence-prediction pairs (segment A, segment B, label) from documents.

    Each document is cut once into A (the text before the cut) and B (the text
    after it), at a random sentence boundary, or, for a one-sentence document,
    at a random word in its middle half: BERT's "sentences" are "arbitrary spans
    of contiguous text" (Devlin et al. 2019, section 3). Half of the pairs keep
    their B (label `IS_NEXT` = 0); the other half take the B of another random
    document (label `NOT_NEXT` = 1). Documents shorter than two words are
    skipped. `duplicates` > 1 repeats this with new cuts and partners (BERT's
    `dupe_factor`).

    Args:
        documents: a list of documents, each a list of sentence strings.
        seed: seed of the cuts, coin flips and partners.
        duplicates: number of passes over the documents.

    Returns:
        A list of (str, str, int) triples.

    Example:

    >>> documents = [["Stocks fell.", "Oil rose."], ["A late goal won the cup final."]]
    >>> pairs = nsp_pairs(documents, seed=0)
    >>> len(pairs), all(label in (0, 1) for _, _, label in pairs)
    (2, True)
    """
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(duplicates):
        cuts = [_cut(document, rng) for document in documents]
        cuts = [cut for cut in cuts if cut is not None]
        for i, (first, second) in enumerate(cuts):
            if len(cuts) > 1 and rng.random() < 0.5:
                other = int(rng.integers(len(cuts) - 1))
                other += other >= i  # another document
                pairs.append((first, cuts[other][1], NOT_NEXT))
            else:
                pairs.append((first, second, IS_NEXT))
    return pairs


def _cut(document, rng):
    if len(document) >= 2:
        k = int(rng.integers(1, len(document)))
        return " ".join(document[:k]), " ".join(document[k:])
    words = " ".join(document).split()
    if len(words) < 2:
        return None
    low, high = max(1, len(words) // 4), max(2, (3 * len(words)) // 4 + 1)
    k = int(rng.integers(low, min(high, len(words))))
    return " ".join(words[:k]), " ".join(words[k:])


def _special_ids(tokenizer):
    ids = {token: tokenizer.token_to_id(token) for token in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")}
    if ids["[PAD]"] != 0:
        raise ValueError(
            "`tokenizer` must map [PAD] to 0 (padded batches and masks assume it). "
            f"Received: [PAD] -> {ids['[PAD]']}"
        )
    return ids


def pack(tokenizer, sequence_length):
    """A function mapping (ragged) segments to BERT's [CLS] A [SEP] B [SEP] inputs.

    keras-hub's `MultiSegmentPacker` adds the special tokens, cuts the longer
    segment first when the pair is too long ("waterfall" would cut B alone), and
    pads with [PAD] = 0 to `sequence_length`.

    Returns:
        A function (segments tuple of ragged int tensors) -> (token_ids,
        segment_ids), both int32 (B, sequence_length).

    Example:

    >>> tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
    ...     vocabulary=["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", "a", "b"])
    >>> token_ids, segment_ids = pack(tokenizer, 8)((tf.ragged.constant([[5, 5]]),
    ...                                              tf.ragged.constant([[6]])))
    >>> token_ids.numpy().tolist(), segment_ids.numpy().tolist()
    ([[1, 5, 5, 2, 6, 2, 0, 0]], [[0, 0, 0, 0, 1, 1, 0, 0]])
    """
    ids = _special_ids(tokenizer)
    packer = keras_hub.layers.MultiSegmentPacker(
        sequence_length,
        start_value=ids["[CLS]"],
        end_value=ids["[SEP]"],
        pad_value=ids["[PAD]"],
        truncate="round_robin",
    )

    def run(segments):
        token_ids, segment_ids = packer(tuple(tf.cast(s, "int32") for s in segments))
        return tf.cast(token_ids, "int32"), tf.cast(segment_ids, "int32")

    return run


def pretraining_dataset(
    pairs,
    tokenizer,
    sequence_length,
    max_predictions,
    batch_size,
    shuffle=False,
    seed=0,
    mask_rate=0.15,
    cache_masks=False,
    drop_remainder=False,
):
    """Masked-LM + next-sentence batches for `models.bert.bert_pretraining` and `fit`.

    Each pair becomes [CLS] A [SEP] B [SEP] (segment ids 0 for [CLS] A [SEP],
    1 for B [SEP], padded to `sequence_length`). keras-hub's
    `MaskedLMMaskGenerator` then chooses `mask_rate` (15%) of the non-special
    tokens, at most `max_predictions` per sequence, and of those replaces 80%
    with [MASK], 10% with a random token and leaves 10% unchanged (Devlin et
    al. 2019, section 3.1). Each element draws its own masks, so the copies of a
    pair made by `nsp_pairs(..., duplicates=k)` are masked differently (BERT's
    `dupe_factor`). With TensorFlow's global seed set (`keras.utils.set_random_seed`)
    every pass over the dataset draws the same masks, as BERT's static masking;
    without it each epoch draws new ones unless `cache_masks` keeps the first
    epoch's (use it for held-out data).

    Elements: (inputs, labels, sample_weight) with
    inputs = {"token_ids", "segment_ids", "padding_mask": int32 (B, T),
    "mask_positions": int32 (B, P)}, labels = {"mlm_logits": the original ids
    at the masked positions int32 (B, P), "nsp_logits": int32 (B,)} and
    sample_weight = {"mlm_logits": 1 on chosen positions and 0 on padding
    (B, P), "nsp_logits": ones (B,)}; P = `max_predictions`.

    Args:
        pairs: (segment A, segment B, label) triples, from `nsp_pairs`.
        tokenizer: a keras-hub `WordPieceTokenizer` whose vocabulary holds
            [PAD] = 0, [CLS], [SEP] and [MASK].
        sequence_length: T.
        max_predictions: P, the most masked positions per sequence.
        batch_size: examples per batch (the last one may be smaller).
        shuffle: shuffle the pairs each epoch.
        seed: the shuffle seed.
        mask_rate: the share of tokens chosen for prediction.
        cache_masks: keep the first epoch's masks for every later epoch.
        drop_remainder: drop the last partial batch (one batch shape to compile).

    Returns:
        A `tf.data.Dataset`.

    Example:

    >>> tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
    ...     vocabulary=["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", "a", "b", "c"])
    >>> dataset = pretraining_dataset([("a b c", "c b a", 0)], tokenizer, 12, 3, 1)
    >>> inputs, labels, weights = next(iter(dataset))
    >>> sorted(inputs), inputs["mask_positions"].shape, labels["nsp_logits"].numpy().tolist()
    (['mask_positions', 'padding_mask', 'segment_ids', 'token_ids'], TensorShape([1, 3]), [0])
    """
    ids = _special_ids(tokenizer)
    packer = pack(tokenizer, sequence_length)
    masker = keras_hub.layers.MaskedLMMaskGenerator(
        vocabulary_size=tokenizer.vocabulary_size(),
        mask_selection_rate=mask_rate,
        mask_token_id=ids["[MASK]"],
        mask_selection_length=max_predictions,
        unselectable_token_ids=[ids["[PAD]"], ids["[CLS]"], ids["[SEP]"]],
        mask_token_rate=0.8,
        random_token_rate=0.1,
    )
    first, second, labels = zip(*pairs) if pairs else ((), (), ())
    dataset = tf.data.Dataset.from_tensor_slices(
        (list(first), list(second), np.asarray(labels, "int32"))
    )
    if shuffle:
        dataset = dataset.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)

    def make(first, second, nsp_labels):
        token_ids, segment_ids = packer((tokenizer(first), tokenizer(second)))
        masked = masker(token_ids)
        inputs = {
            "token_ids": tf.cast(masked["token_ids"], "int32"),
            "segment_ids": segment_ids,
            "padding_mask": tf.cast(token_ids != ids["[PAD]"], "int32"),
            "mask_positions": tf.cast(masked["mask_positions"], "int32"),
        }
        targets = {
            "mlm_logits": tf.cast(masked["mask_ids"], "int32"),
            "nsp_logits": nsp_labels,
        }
        weights = {
            "mlm_logits": tf.cast(masked["mask_weights"], "float32"),
            "nsp_logits": tf.ones_like(nsp_labels, "float32"),
        }
        return inputs, targets, weights

    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(make, num_parallel_calls=tf.data.AUTOTUNE)
    if cache_masks:
        dataset = dataset.cache()
    return dataset.prefetch(tf.data.AUTOTUNE)


def classification_dataset(
    sentences,
    labels,
    tokenizer,
    sequence_length,
    batch_size,
    shuffle=False,
    seed=0,
    drop_remainder=False,
    bucket_boundaries=None,
):
    """Single-sentence classification batches ([CLS] sentence [SEP]) for `bert_classifier`.

    Sentences longer than `sequence_length` - 2 tokens are cut. Without
    `bucket_boundaries` every batch is padded (with [PAD] = 0) to `sequence_length`.
    With them, the sentences are tokenized at once (and cached), grouped by
    their packed length and each batch is padded only to the first of
    `bucket_boundaries` + [sequence_length] that holds its longest sentence:
    short sentences (most of SST-2) then cost a short sequence, and a compiled
    training step sees one shape per bound.

    Args:
        sentences: a list of str.
        labels: their int class ids.
        tokenizer: a keras-hub `WordPieceTokenizer` whose vocabulary holds
            [PAD] = 0, [CLS] and [SEP].
        sequence_length: the longest packed sentence, specials included.
        batch_size: sentences per batch.
        shuffle: shuffle the sentences (each epoch anew) before batching.
        seed: the shuffle seed.
        drop_remainder: drop the last partial batch (of each bucket).
        bucket_boundaries: None, or increasing positive int lengths that batches
            are padded to; those >= `sequence_length` are ignored.

    Returns:
        A `tf.data.Dataset` of ({"token_ids", "segment_ids", "padding_mask": int32
        (B, L)}, labels int32 (B,)); L = `sequence_length`, or a bucket's bound.

    Example:

    >>> tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
    ...     vocabulary=["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", "a", "gem"])
    >>> inputs, labels = next(iter(classification_dataset(["a gem"], [1], tokenizer, 6, 2)))
    >>> inputs["token_ids"].numpy().tolist(), labels.numpy().tolist()
    ([[1, 5, 6, 2, 0, 0]], [1])
    >>> dataset = classification_dataset(["a", "a gem a gem"], [0, 1], tokenizer, 8, 2,
    ...                                  bucket_boundaries=[4])
    >>> [batch[0]["token_ids"].numpy().tolist() for batch in dataset]
    [[[1, 5, 2, 0]], [[1, 5, 6, 5, 6, 2, 0, 0]]]
    """
    bucket_boundaries = _check_boundaries(bucket_boundaries)
    ids = _special_ids(tokenizer)
    packer = pack(tokenizer, sequence_length)
    dataset = tf.data.Dataset.from_tensor_slices((list(sentences), np.asarray(labels, "int32")))

    def make(sentences, labels):
        token_ids, segment_ids = packer((tokenizer(sentences),))
        inputs = {
            "token_ids": token_ids,
            "segment_ids": segment_ids,
            "padding_mask": tf.cast(token_ids != ids["[PAD]"], "int32"),
        }
        return inputs, labels

    if not bucket_boundaries:
        if shuffle:
            dataset = dataset.shuffle(len(sentences), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        return dataset.map(make, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def unpad(inputs, label):
        length = tf.reduce_sum(inputs["padding_mask"])
        return {name: x[:length] for name, x in inputs.items()}, label

    # Tokenizing 1,000 strings at a time is much faster than one by one.
    examples = dataset.batch(1000).map(make).unbatch().map(unpad).cache()
    # One pass now fills the cache and counts the batches (a known epoch length for `fit`).
    lengths = [np.zeros(0, "int32")] + list(
        examples.map(lambda inputs, label: tf.shape(inputs["token_ids"])[0]).batch(8192).as_numpy_iterator()
    )
    if shuffle:
        examples = examples.shuffle(len(sentences), seed=seed, reshuffle_each_iteration=True)
    batches = bucket_and_pad(
        examples, bucket_boundaries, sequence_length, batch_size, drop_remainder, np.concatenate(lengths)
    )
    return batches.prefetch(tf.data.AUTOTUNE)


def _check_boundaries(bucket_boundaries):
    """`bucket_boundaries` as a list (empty for None), or ValueError unless increasing positive ints."""
    try:
        bounds = [] if bucket_boundaries is None else list(bucket_boundaries)
    except TypeError:
        bounds = None
    if bounds is None or not all(
        isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b > 0 for b in bounds
    ) or any(b >= c for b, c in zip(bounds, bounds[1:])):
        raise ValueError(
            "`bucket_boundaries` must be None or increasing positive ints. "
            f"Received: bucket_boundaries={bucket_boundaries!r}"
        )
    return bounds


def word_piece_vocabulary(texts, vocabulary_size, path=None, lowercase=True):
    """Trains an uncased BERT WordPiece vocabulary with keras-hub (or reads `path`).

    The vocabulary starts with `SPECIAL_TOKENS` ([PAD] = 0). When `path` exists
    it is read instead of training; otherwise the new vocabulary is written there
    (one token a line, BERT's vocab.txt format).

    Example:

    >>> vocabulary = word_piece_vocabulary(["a dog runs", "a dog sits"], 30)
    >>> vocabulary[:5]
    ['[PAD]', '[CLS]', '[SEP]', '[UNK]', '[MASK]']
    """
    return cached_word_piece_vocabulary(
        texts,
        vocabulary_size,
        path,
        SPECIAL_TOKENS,
        lowercase=lowercase,
        strip_accents=lowercase,
    )
