"""Attention probabilities of a built model, layer by layer, and attention rollout.

`attention_scores` re-runs a model's own layers (inference: no dropout) with
`return_attention_scores=True`; `attention_rollout` follows Abnar & Zuidema,
"Quantifying Attention Flow in Transformers" (2020).
"""

import math

import numpy as np
from keras import ops

from keras_transformers.models.model import layer_names, numbered_blocks, validate_inputs


def model_kind(model):
    """Which builder made `model`: "gpt2", "bert", "vit" or "transformer".

    BERT heads (`bert_classifier`, ...) count as "bert": they hold the backbone's
    layers. Raises a ValueError for any other model.
    """
    names = layer_names(model)
    if "patch_embedding" in names and "encoder_block_0" in names:
        return "vit"
    if "segment_embedding" in names and "encoder_block_0" in names:
        return "bert"
    if "encoder_block_0" in names and "decoder_block_0" in names:
        return "transformer"
    if "token_embedding" in names and "position_embedding" in names and "decoder_block_0" in names:
        return "gpt2"
    raise ValueError(
        "`model` must be built by keras_transformers.models (gpt2, bert and its heads, vit, "
        f"transformer). Received: model={getattr(model, 'name', model)!r}"
    )


def _mask(inputs, name):
    return ops.cast(ops.convert_to_tensor(inputs[name]), "bool")


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")))


def attention_scores(model, inputs):
    """Every attention's probabilities for `inputs`, from the model's own layers.

    The model's embedding layers and blocks run again, in inference mode (no
    dropout), each block with `return_attention_scores=True`; the masks are the
    model's own (GPT-2: causal and padding; BERT and the Transformer's encoder:
    padding; the Transformer's decoder: causal and padding, its cross-attention
    the encoder's padding). A masked key gets probability 0; every query row sums
    to 1, except a query with no key at all, whose row is all zeros.

    Args:
        model: a model built by `keras_transformers.models`: `gpt2.gpt2`,
            `bert.bert` or one of its heads, `vit.vit`, `transformer.transformer`.
        inputs: the dict the model takes (numpy arrays or tensors), as for
            `model(inputs)`; extra head inputs (BERT's `mask_positions`) may be
            given and are unused.

    Returns:
        A dict, in layer order, from "<block name>/self_attention" (and, for the
        Transformer's decoder blocks, "<block name>/cross_attention") to float32
        numpy arrays (B, num_heads, T, S): query positions T, key positions S.
        ViT's sequence is the class token followed by the patches, row by row.

    Example:

    >>> import numpy as np
    >>> from keras_transformers.models.gpt2 import gpt2
    >>> model = gpt2(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8,
    ...              intermediate_dim=16, max_sequence_length=8)
    >>> scores = attention_scores(model, {"token_ids": np.array([[3, 1, 4]], "int32"),
    ...                                   "padding_mask": np.ones((1, 3), "int32")})
    >>> {name: s.shape for name, s in scores.items()}
    {'decoder_block_0/self_attention': (1, 2, 3, 3), 'decoder_block_1/self_attention': (1, 2, 3, 3)}
    >>> np.round(scores["decoder_block_0/self_attention"][0, 0, 0], 3).tolist()  # causal
    [1.0, 0.0, 0.0]
    """
    kind = model_kind(model)
    model_inputs = {name: inputs[name] for name in model.input if name in inputs}
    validate_inputs(model, model_inputs)
    scores = {}
    if kind == "gpt2":
        token_embedding = model.get_layer("token_embedding")
        x = token_embedding(ops.convert_to_tensor(inputs["token_ids"]))  # (B, T, D)
        x = x + model.get_layer("position_embedding")(x)
        mask = _mask(inputs, "padding_mask")
        for block in numbered_blocks(model, "decoder"):
            x, block_scores = block(
                x, decoder_padding_mask=mask, return_attention_scores=True, training=False
            )
            scores[f"{block.name}/self_attention"] = _numpy(block_scores)
    elif kind == "bert":
        tokens = model.get_layer("token_embedding")(ops.convert_to_tensor(inputs["token_ids"]))
        positions = model.get_layer("position_embedding")(tokens)
        segments = model.get_layer("segment_embedding")(ops.convert_to_tensor(inputs["segment_ids"]))
        x = model.get_layer("embeddings_add")([tokens, positions, segments])
        x = model.get_layer("embeddings_layer_norm")(x)
        mask = _mask(inputs, "padding_mask")
        for block in numbered_blocks(model, "encoder"):
            x, block_scores = block(
                x, padding_mask=mask, return_attention_scores=True, training=False
            )
            scores[f"{block.name}/self_attention"] = _numpy(block_scores)
    elif kind == "vit":
        x = model.get_layer("patch_embedding")(ops.convert_to_tensor(inputs["images"]))
        for block in numbered_blocks(model, "encoder"):
            x, block_scores = block(x, return_attention_scores=True, training=False)
            scores[f"{block.name}/self_attention"] = _numpy(block_scores)
    else:
        encoder_mask = _mask(inputs, "encoder_padding_mask")
        decoder_mask = _mask(inputs, "decoder_padding_mask")
        x = _transformer_embed(model, inputs["encoder_token_ids"], "encoder")
        for block in numbered_blocks(model, "encoder"):
            x, block_scores = block(
                x, padding_mask=encoder_mask, return_attention_scores=True, training=False
            )
            scores[f"{block.name}/self_attention"] = _numpy(block_scores)
        y = _transformer_embed(model, inputs["decoder_token_ids"], "decoder")
        for block in numbered_blocks(model, "decoder"):
            y, self_scores, cross_scores = block(
                y,
                x,
                decoder_padding_mask=decoder_mask,
                encoder_padding_mask=encoder_mask,
                return_attention_scores=True,
                training=False,
            )
            scores[f"{block.name}/self_attention"] = _numpy(self_scores)
            scores[f"{block.name}/cross_attention"] = _numpy(cross_scores)
    return scores


def _transformer_embed(model, token_ids, side):
    """The Transformer's embedding: token embedding * sqrt(d_model) + sinusoids (section 3.4)."""
    names = layer_names(model)
    embedding_name = f"{side}_token_embedding"
    token_embedding = model.get_layer(embedding_name if embedding_name in names else "token_embedding")
    x = token_embedding(ops.convert_to_tensor(token_ids)) * math.sqrt(token_embedding.output_dim)
    return x + model.get_layer(f"{side}_position_encoding")(x)


def attention_rollout(scores, residual_weight=0.5):
    """Attention rollout: how much each output position draws on each input position.

    Abnar & Zuidema (2020), equation 1: with A_l the head-averaged attention of
    layer l, mixed with the residual connection as
    Â_l = residual_weight * I + (1 - residual_weight) * A_l (rows renormalised),
    the rollout is Â_L ... Â_2 Â_1.

    Args:
        scores: a sequence of (B, num_heads, T, T) self-attention probabilities,
            first layer first, or the dict `attention_scores` returns for a
            model with self-attention only (GPT-2, BERT, ViT).
        residual_weight: weight of the identity (the residual path), in [0, 1].

    Returns:
        A float32 numpy array (B, T, T); each row sums to 1.

    Example:

    >>> import numpy as np
    >>> uniform = np.full((1, 2, 3, 3), 1 / 3, "float32")
    >>> np.round(attention_rollout([uniform, uniform])[0, 0], 3).tolist()
    [0.5, 0.25, 0.25]
    """
    if isinstance(scores, dict):
        if any(name.endswith("cross_attention") for name in scores):
            raise ValueError(
                "`scores` must hold self-attention only: pass the encoder's or the "
                f"decoder's self-attention. Received: scores with keys {list(scores)}"
            )
        scores = list(scores.values())
    if not 0 <= residual_weight <= 1:
        raise ValueError(
            f"`residual_weight` must be in [0, 1]. Received: residual_weight={residual_weight!r}"
        )
    if not scores:
        raise ValueError("`scores` must hold at least one layer. Received: scores=[]")
    rollout = None
    for layer_scores in scores:
        layer_scores = np.asarray(layer_scores, "float64")
        if layer_scores.ndim != 4 or layer_scores.shape[-1] != layer_scores.shape[-2]:
            raise ValueError(
                "`scores` must be (batch, num_heads, T, T) self-attention arrays. "
                f"Received: an array with shape={layer_scores.shape}"
            )
        mixed = layer_scores.mean(axis=1)  # (B, T, T)
        identity = np.eye(mixed.shape[-1])[None]
        mixed = residual_weight * identity + (1 - residual_weight) * mixed
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout.astype("float32")
