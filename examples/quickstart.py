"""Quick start: a tiny character-level, decoder-only language model on Tiny Shakespeare.

TokenAndPositionEmbedding -> N x pre-norm TransformerDecoderBlock (causal self-attention,
no cross-attention) -> LayerNorm -> Dense(vocabulary), trained with `model.fit` to predict
the next character. Reports train and held-out loss in nats per character and perplexity,
then prints a greedy sample. Runs on any Keras backend (default here: whatever
KERAS_BACKEND says; `bash scripts/main` uses jax).

    python examples/quickstart.py --steps 300 --output runs/quickstart

Data: `<data-dir>/tinyshakespeare/input.txt` (the file TFDS `tiny_shakespeare` and
karpathy/char-rnn use). Without `--data-dir`, `../shared/data` beside the repository is
tried, then the ~20 KB sample packaged with keras_transformers.
"""

import argparse
import importlib.resources
import json
import math
import os
import time

import keras
import numpy as np

from keras_transformers.layers import TokenAndPositionEmbedding
from keras_transformers.layers import TransformerDecoderBlock

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.join(REPO_ROOT, "..", "shared", "data")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding tinyshakespeare/input.txt (default: ../shared/data beside "
        "the repository, else the packaged sample)",
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--sample-length", type=int, default=200, help="characters to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output",
        default=None,
        help="folder to write model.keras and metrics.json to (default: write nothing)",
    )
    args = parser.parse_args()
    for name in ("steps", "batch_size", "sequence_length", "hidden_dim", "num_layers", "num_heads"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.data_dir is not None and find_text_file(args.data_dir) is None:
        parser.error(f"no tinyshakespeare/input.txt or input.txt under --data-dir {args.data_dir}")
    return args


def find_text_file(data_dir):
    for path in (os.path.join(data_dir, "tinyshakespeare", "input.txt"), os.path.join(data_dir, "input.txt")):
        if os.path.isfile(path):
            return path
    return None


def load_text(data_dir):
    """Returns (text, where it came from)."""
    path = find_text_file(data_dir or DEFAULT_DATA_DIR)
    if path is not None:
        with open(path, encoding="utf-8") as f:
            return f.read(), os.path.normpath(path)
    sample = importlib.resources.files("keras_transformers") / "data" / "tinyshakespeare_sample.txt"
    return sample.read_text(encoding="utf-8"), "packaged sample (keras_transformers/data)"


def random_windows(ids, count, length, rng):
    """`count` random (input, next-character target) windows of `length` characters."""
    starts = rng.integers(0, len(ids) - length, size=count)
    positions = starts[:, None] + np.arange(length + 1)[None, :]  # (count, length + 1)
    windows = ids[positions]
    return windows[:, :-1], windows[:, 1:]


def consecutive_windows(ids, length):
    """Every non-overlapping window of `ids`, for evaluation."""
    count = (len(ids) - 1) // length
    inputs = ids[: count * length].reshape(count, length)  # (count, length)
    targets = ids[1 : count * length + 1].reshape(count, length)  # (count, length)
    return inputs, targets


def build_model(vocabulary_size, sequence_length, hidden_dim, num_layers, num_heads):
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = TokenAndPositionEmbedding(
        vocabulary_size, sequence_length, hidden_dim, name="embedding"
    )(token_ids)  # (B, T, hidden_dim)
    for i in range(num_layers):
        # Pre-norm (normalize_first) as in GPT-2 (Radford et al., 2019, section 2.3).
        x = TransformerDecoderBlock(
            num_heads,
            4 * hidden_dim,
            normalize_first=True,
            use_cross_attention=False,
            name=f"decoder_block_{i}",
        )(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = keras.layers.Dense(vocabulary_size, name="logits")(x)  # (B, T, vocabulary_size)
    return keras.Model(token_ids, logits, name="char_transformer")


def greedy_sample(model, prompt_ids, length, sequence_length):
    """Appends `length` argmax characters, each from a full forward pass over the last
    `sequence_length` characters (a fixed window, so the compiled function is reused)."""
    ids = list(prompt_ids)
    for _ in range(length):
        window = np.asarray(ids[-sequence_length:], dtype="int32")[None, :]  # (1, T)
        logits = model.predict_on_batch(window)  # (1, T, vocabulary_size)
        ids.append(int(np.argmax(logits[0, -1])))
    return ids[len(prompt_ids) :]


def main():
    args = parse_args()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    text, source = load_text(args.data_dir)
    vocabulary = sorted(set(text))
    char_to_id = {c: i for i, c in enumerate(vocabulary)}
    ids = np.array([char_to_id[c] for c in text], dtype="int32")
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    length = args.sequence_length
    if len(val_ids) <= length + 1:
        raise SystemExit(f"text too short for --sequence-length {length}: {len(text)} chars")
    print(
        f"backend {keras.backend.backend()}; text {source}: {len(text):,} chars, "
        f"vocabulary {len(vocabulary)}, train {len(train_ids):,} / held-out {len(val_ids):,}"
    )

    model = build_model(len(vocabulary), length, args.hidden_dim, args.num_layers, args.num_heads)
    schedule = keras.optimizers.schedules.CosineDecay(
        args.learning_rate, decay_steps=args.steps, alpha=0.1
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    print(f"model: {model.count_params():,} parameters, {args.num_layers} layers, hidden {args.hidden_dim}")

    x_train, y_train = random_windows(train_ids, args.steps * args.batch_size, length, rng)
    log_every = min(50, args.steps)
    start = time.perf_counter()
    for first in range(0, args.steps, log_every):
        last = min(first + log_every, args.steps)
        rows = slice(first * args.batch_size, last * args.batch_size)
        history = model.fit(
            x_train[rows], y_train[rows], batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0
        )
        print(f"step {last:5d}  train loss {history.history['loss'][-1]:.3f}  ({time.perf_counter() - start:.1f}s)")
    train_seconds = time.perf_counter() - start

    # Both losses on the same number of windows: the held-out last 10%, and as many
    # random windows from the training text.
    x_val, y_val = consecutive_windows(val_ids, length)
    x_seen, y_seen = random_windows(train_ids, len(x_val), length, rng)
    train_loss = float(model.evaluate(x_seen, y_seen, batch_size=64, verbose=0))
    val_loss = float(model.evaluate(x_val, y_val, batch_size=64, verbose=0))
    print(f"train      loss {train_loss:.3f} nats/char  perplexity {math.exp(train_loss):.2f}")
    print(f"validation loss {val_loss:.3f} nats/char  perplexity {math.exp(val_loss):.2f}")
    print(f"(a uniform guess over the vocabulary: {math.log(len(vocabulary)):.3f} nats/char)")

    prompt = val_ids[:length]
    sample = greedy_sample(model, prompt, args.sample_length, length)
    print("greedy sample, prompt from the held-out text:")
    print("".join(vocabulary[i] for i in prompt) + "|" + "".join(vocabulary[i] for i in sample))

    if args.output:
        os.makedirs(args.output, exist_ok=True)
        model.save(os.path.join(args.output, "model.keras"))
        metrics = {
            "backend": keras.backend.backend(),
            "data": source,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "train_seconds": round(train_seconds, 2),
            "train_loss": train_loss,
            "validation_loss": val_loss,
            "train_perplexity": math.exp(train_loss),
            "validation_perplexity": math.exp(val_loss),
            "vocabulary": "".join(vocabulary),
        }
        with open(os.path.join(args.output, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        print(f"wrote {args.output}/model.keras and metrics.json")


if __name__ == "__main__":
    main()
