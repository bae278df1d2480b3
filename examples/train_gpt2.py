"""Train a GPT-2 language model on Tiny Shakespeare, sample from it, draw its attention, export it.

A decoder-only, pre-norm Transformer (Radford et al. 2019) learns to predict the next
character (or GPT-2 BPE token with `--tokenizer bpe`) of Shakespeare: 90% of the text for
training, the last 10% held out. Reported: validation loss in nats per token (character)
and perplexity exp(loss); then a sample from the KV-cached sampler, attention maps of a
held-out line, and a SavedModel export checked against the Keras model.

    # the full run (target: validation loss <= 1.60 nats/char within 30 minutes on CPU):
    # 1,500 steps of 32 x 128 characters (~6M, ~6 passes over the text), 1.8M parameters
    KERAS_BACKEND=jax python examples/train_gpt2.py --output runs/gpt2
    # what `bash scripts/main` runs: a small model, a few minutes
    KERAS_BACKEND=jax python examples/train_gpt2.py --quick --output runs/gpt2_quick
    # CI: under a minute
    python examples/train_gpt2.py --smoke --output /tmp/gpt2_smoke

Measured on a shared 2-core CPU (JAX, load ~6): 4 s/step for the full preset, so 120
steps (`--epochs 2 --steps-per-epoch 60`) took 8.1 minutes and reached a validation loss of
2.44 nats/char; `--quick` trains in 2.8 minutes to 2.02 nats/char (3.6 minutes in all).

A run killed mid-epoch resumes from its last backup when started again with the same
`--output` (keras.callbacks.BackupAndRestore). TensorBoard: `tensorboard --logdir <output>/logs`.
"""

import argparse
import math
import os
import time

import keras
import numpy as np

from keras_transformers import visualize
from keras_transformers.data import language_modeling
from keras_transformers.losses import SparseCategoricalCrossentropy
from keras_transformers.models.gpt2 import gpt2
from keras_transformers.optimizers import AdamW

import common  # examples/common.py

REPO_ROOT = common.REPO_ROOT

# Sizes: `full` is meant to reach 1.60 nats/char on a CPU in 30 minutes; `quick` is the
# README's main job (a few minutes); `smoke` is CI's (well under a minute).
PRESETS = {
    "full": dict(
        num_layers=4, num_heads=4, hidden_dim=192, sequence_length=128, batch_size=32,
        epochs=15, steps_per_epoch=100, learning_rate=2e-3, warmup_steps=100, dropout=0.0,
        sample_length=300, validation_windows=None,
    ),
    "quick": dict(
        num_layers=2, num_heads=4, hidden_dim=128, sequence_length=64, batch_size=32,
        epochs=4, steps_per_epoch=100, learning_rate=3e-3, warmup_steps=40, dropout=0.0,
        sample_length=120, validation_windows=None,
    ),
    "smoke": dict(
        num_layers=1, num_heads=2, hidden_dim=32, sequence_length=32, batch_size=8,
        epochs=2, steps_per_epoch=8, learning_rate=3e-3, warmup_steps=2, dropout=0.1,
        sample_length=16, validation_windows=64,
    ),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = common.add_common_arguments(
        parser,
        data_help="folder holding tinyshakespeare/input.txt and gpt2-bpe/ "
        "(default: ../shared/data; else TFDS, else the packaged sample)",
        output=None,  # runs/train_gpt2[_quick|_smoke]
        export_dir=os.path.join(REPO_ROOT, "saved_models", "gpt2_shakespeare"),
        backup_every=50,
    )
    size.add_argument("--quick", action="store_true", help="a small model for a few minutes")
    parser.add_argument("--tokenizer", choices=("char", "bpe"), default="char",
                        help="characters (default) or GPT-2's byte-level BPE")
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--sequence-length", type=int)
    parser.add_argument("--num-layers", type=int)
    parser.add_argument("--num-heads", type=int)
    parser.add_argument("--hidden-dim", type=int)
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument("--sample-length", type=int)
    parser.add_argument("--validation-windows", type=int,
                        help="evaluate on the first this many held-out windows only")
    parser.add_argument("--sampler", choices=("top_k", "top_p"), default="top_k")
    args = parser.parse_args(argv)
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.output is None:
        args.output = os.path.join(REPO_ROOT, "runs", "train_gpt2" + ("" if size == "full" else f"_{size}"))
    return common.fill_from_preset(args, PRESETS[size])


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output, exist_ok=True)

    # --- Data: the text, a tokenizer, 90% / 10% of the tokens, windows through tf.data.
    text, source = language_modeling.load_tiny_shakespeare(
        args.data_dir, download=True, packaged_sample=True)
    if args.tokenizer == "char":
        tokenizer = language_modeling.character_tokenizer()
    else:
        tokenizer = language_modeling.gpt2_bpe_tokenizer(args.data_dir)
    ids = language_modeling.tokenize(text, tokenizer)
    train_ids, validation_ids = language_modeling.split_ids(ids, validation_fraction=0.1)
    vocabulary_size = int(tokenizer.vocabulary_size())
    print(f"backend {keras.backend.backend()}; {source}: {len(text):,} characters -> "
          f"{len(ids):,} {args.tokenizer} tokens (vocabulary {vocabulary_size}); "
          f"train {len(train_ids):,} / validation {len(validation_ids):,}")
    train_data = language_modeling.training_windows(
        train_ids, args.sequence_length, args.batch_size, seed=args.seed)
    validation_data = language_modeling.evaluation_windows(
        validation_ids, args.sequence_length, args.batch_size, max_windows=args.validation_windows)

    # --- Model: GPT-2 (pre-norm blocks, tied input/output embedding), sized by the preset.
    model = gpt2(
        vocabulary_size=vocabulary_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        hidden_dim=args.hidden_dim,
        intermediate_dim=4 * args.hidden_dim,  # the paper's d_ff = 4 d_model
        max_sequence_length=args.sequence_length,
        dropout=args.dropout,
    )
    total_steps = args.epochs * args.steps_per_epoch
    # Linear warmup, then cosine decay to 10% (GPT-2 follows GPT-1, section 4.1: warmup
    # and a cosine schedule); AdamW with decoupled weight decay (Loshchilov & Hutter 2019),
    # none on biases and LayerNorm parameters.
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        warmup_target=args.learning_rate,
        warmup_steps=args.warmup_steps,
        decay_steps=max(1, total_steps - args.warmup_steps),
        alpha=0.1,
    )
    # Ours: Keras' AdamW update, one fused kernel on PyTorch's CPU.
    optimizer = AdamW(schedule, weight_decay=0.1, beta_2=0.99, global_clipnorm=1.0)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    # Cross-entropy in nats per token: the mean of -log p(next token). Ours rather than
    # Keras': the same values, about 2x faster over a vocabulary on PyTorch and JAX.
    model.compile(optimizer=optimizer, loss=SparseCategoricalCrossentropy(from_logits=True))
    print(f"GPT-2: {model.count_params():,} parameters, {args.num_layers} layers x "
          f"{args.num_heads} heads, hidden {args.hidden_dim}, context {args.sequence_length}")

    # --- Training: fit with progress bars, TensorBoard, backups for resuming, checkpoints.
    callbacks, initial_step = common.fit_callbacks(args, checkpoint="best.keras", monitor="val_loss")
    start = time.perf_counter()
    history = model.fit(train_data, validation_data=validation_data, epochs=args.epochs,
                        steps_per_epoch=args.steps_per_epoch, callbacks=callbacks, shuffle=False,
                        verbose=2 if args.smoke else 1)
    train_minutes = (time.perf_counter() - start) / 60

    # --- Evaluation: the held-out loss per token and its perplexity, beside the training loss
    # on as many random training windows.
    validation_loss = float(model.evaluate(validation_data, verbose=0))
    num_windows = sum(int(x["token_ids"].shape[0]) for x, _ in validation_data)
    train_loss = float(model.evaluate(train_data, steps=max(1, num_windows // args.batch_size), verbose=0))
    unit = "char" if args.tokenizer == "char" else "token"
    print(f"train      loss {train_loss:.3f} nats/{unit}  perplexity {math.exp(train_loss):.2f}")
    print(f"validation loss {validation_loss:.3f} nats/{unit}  perplexity {math.exp(validation_loss):.2f}"
          f"  ({train_minutes:.1f} min of training)")

    # --- Sampling: KV-cached generation from a held-out prompt, top-k or top-p, seeded.
    from keras_transformers.generation import generate

    prompt = validation_ids[: min(32, args.sequence_length // 2)]
    max_new_tokens = min(args.sample_length, args.sequence_length - len(prompt))
    outputs = generate(
        model,
        {"token_ids": prompt[None].astype("int32"), "padding_mask": np.ones((1, len(prompt)), "int32")},
        max_new_tokens=max_new_tokens,
        sampler=args.sampler,
        top_k=5 if args.sampler == "top_k" else None,
        top_p=0.9 if args.sampler == "top_p" else None,
        temperature=0.8,
        seed=args.seed,
    )
    new_ids = outputs["token_ids"][0, len(prompt):][outputs["padding_mask"][0, len(prompt):]]
    prompt_text = _decode(tokenizer, prompt)
    sample = _decode(tokenizer, new_ids)
    print(f"sample ({args.sampler}, temperature 0.8), prompt from the held-out text:\n"
          f"{prompt_text}|{sample}")

    # --- Attention maps of a held-out line: every layer and head, the last layer, one token.
    line = validation_ids[: min(48, args.sequence_length)]
    tokens = [_decode(tokenizer, [i]) for i in line]
    scores = visualize.attention_scores(
        model, {"token_ids": line[None].astype("int32"), "padding_mask": np.ones((1, len(line)), "int32")})
    pictures = {
        "attention_maps.png": lambda path: visualize.plot_attention_maps(
            scores, tokens, tokens, path, title="GPT-2 self-attention, every layer and head"),
        "attention_last_layer.png": lambda path: visualize.plot_attention(
            list(scores.values())[-1][0], tokens, tokens, path, title=list(scores)[-1]),
        "token_attention.png": lambda path: visualize.plot_token_attention(
            list(scores.values())[-1][0], tokens, len(tokens) - 1, path),
    }
    for name, draw in pictures.items():
        draw(os.path.join(args.output, name))
    print(f"attention pictures: {', '.join(pictures)} in {args.output}")
    pictures = {name[: -len(".png")]: os.path.join(args.output, name) for name in pictures}

    # --- Export for TF Serving, and check: the reloaded SavedModel against the Keras model.
    export = _export_and_check(model, args, validation_ids, tokenizer)

    metrics = {
        "backend": keras.backend.backend(),
        "data": source,
        "tokenizer": args.tokenizer,
        "vocabulary_size": vocabulary_size,
        "parameters": int(model.count_params()),
        "smoke": args.smoke,
        "config": {k: getattr(args, k) for k in PRESETS["full"]},
        "initial_step": initial_step.initial_step,
        "steps": int(model.optimizer.iterations),
        "train_minutes": round(train_minutes, 2),
        "train_loss": train_loss,
        "validation_loss": validation_loss,
        "validation_perplexity": math.exp(validation_loss),
        "loss_unit": f"nats/{unit}",
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "pictures": pictures,
        "sample": {"prompt": prompt_text, "continuation": sample, "sampler": args.sampler},
        "export": export,
    }
    common.write_metrics(args.output, metrics)
    return metrics


def _decode(tokenizer, ids):
    return str(tokenizer.detokenize(np.asarray(ids, "int32")))


def _export_and_check(model, args, validation_ids, tokenizer):
    """export_saved_model, then tf.saved_model.load: serving_default's logits must match the
    model's, and the greedy `generate` signature must give Python `generate`'s tokens."""
    from keras_transformers.export import export_saved_model

    # serving_default (the logits for a batch of token ids) and generate (greedy KV-cached
    # decoding inside the graph): see the README's Serving section.
    path = export_saved_model(model, args.export_dir, version=args.export_version, overwrite=True)
    import tensorflow as tf

    # Two held-out windows, the second right-padded: what a client would send.
    length = min(16, args.sequence_length)
    token_ids = np.stack([validation_ids[:length], validation_ids[length:2 * length]]).astype("int32")
    padding_mask = np.ones_like(token_ids)
    padding_mask[1, length // 2:] = 0
    token_ids[1, length // 2:] = 0
    loaded = tf.saved_model.load(path)
    serving = loaded.signatures["serving_default"]
    served = serving(token_ids=tf.constant(token_ids), padding_mask=tf.constant(padding_mask))["logits"].numpy()
    expected = keras.ops.convert_to_numpy(model({"token_ids": token_ids, "padding_mask": padding_mask}))
    difference = float(np.max(np.abs(served - expected)[padding_mask.astype(bool)]))
    if not difference <= 1e-4:
        raise RuntimeError(f"the SavedModel's logits differ from the model's by {difference}")
    print(f"exported {path}; serving_default reproduces the model (max |difference| {difference:.1e})")

    # generate: a held-out prompt continued inside the graph, token for token as Python `generate`.
    from keras_transformers.generation import generate

    prompt = validation_ids[: min(8, args.sequence_length // 2)][None].astype("int32")
    max_new_tokens = min(8, args.sequence_length - prompt.shape[1])
    prompt_mask = np.ones_like(prompt)
    served = loaded.signatures["generate"](
        token_ids=tf.constant(prompt), padding_mask=tf.constant(prompt_mask),
        max_new_tokens=tf.constant(max_new_tokens, tf.int32))
    served = served["token_ids"].numpy()
    expected = generate(model, {"token_ids": prompt, "padding_mask": prompt_mask}, max_new_tokens)
    if not np.array_equal(served, expected["token_ids"]):
        raise RuntimeError(f"the SavedModel's generate gave {served.tolist()}, the model "
                           f"{expected['token_ids'].tolist()}")
    print(f"generate (greedy) reproduces the model token for token, {max_new_tokens} new tokens:\n"
          f"{_decode(tokenizer, prompt[0])}|{_decode(tokenizer, served[0, prompt.shape[1]:])}")
    return {"path": path, "max_abs_difference": difference, "generate_tokens": served[0].tolist()}


if __name__ == "__main__":
    main()
