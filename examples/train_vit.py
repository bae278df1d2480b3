"""Train a Vision Transformer on MNIST, draw where its class token looks, export it.

ViT (Dosovitskiy et al. 2021) on 28 x 28 digits: 4 x 4 patches (a 7 x 7 grid plus the
class token), pre-norm encoder blocks, a linear head on the class token. The data is
the real MNIST test set (10,000 digits), split stratified and seeded into 8,000 for
training and 2,000 for validation. Reported: validation accuracy; then the class token's
attention (per head of the last layer, and attention rollout through all layers) over
a few validation digits, and a SavedModel export (serving_default + classify) checked
against the Keras model.

    # the full run (target: >= 97% validation accuracy)
    KERAS_BACKEND=jax python examples/train_vit.py --output runs/vit
    # CI: under a minute
    python examples/train_vit.py --smoke --output /tmp/vit_smoke

Measured on the 2-core CPU (JAX): 60 epochs of 62 steps reached 97.55% validation accuracy
in 17.4 minutes (15-20 s an epoch, quiet machine); 40 epochs (the earlier preset) reached
96.70% in 21.0 minutes under load.

A run killed mid-epoch resumes from its last backup when started again with the same
`--output` (keras.callbacks.BackupAndRestore). TensorBoard: `tensorboard --logdir <output>/logs`.
"""

import argparse
import os
import time

import keras
import numpy as np

from keras_transformers import visualize
from keras_transformers.data import mnist
from keras_transformers.models.vit import vit
from keras_transformers.optimizers import AdamW

import common  # examples/common.py

PRESETS = {
    "full": dict(
        num_layers=4, num_heads=4, hidden_dim=64, epochs=60, batch_size=128,
        learning_rate=2e-3, warmup_epochs=3, dropout=0.1, max_examples=None,
    ),
    "smoke": dict(
        num_layers=1, num_heads=2, hidden_dim=16, epochs=2, batch_size=64,
        learning_rate=2e-3, warmup_epochs=1, dropout=0.0, max_examples=1000,
    ),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(
        parser,
        data_help="folder holding mnist-test/ (default: ../shared/data; else TFDS mnist)",
        output=os.path.join(common.REPO_ROOT, "runs", "train_vit"),
        export_dir=os.path.join(common.REPO_ROOT, "saved_models", "vit_mnist"),
        backup_every=20,
    )
    parser.add_argument("--num-layers", type=int)
    parser.add_argument("--num-heads", type=int)
    parser.add_argument("--hidden-dim", type=int)
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--warmup-epochs", type=int)
    parser.add_argument("--max-examples", type=int, help="use a stratified subset of the 10,000")
    parser.add_argument("--no-augment", action="store_true", help="no random 2-pixel shifts")
    common.add_tfds_arguments(parser, "local_mnist")
    args = parser.parse_args(argv)
    return common.fill_from_preset(args, PRESETS["smoke" if args.smoke else "full"])


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output, exist_ok=True)

    # --- Data: MNIST's 10,000 test digits, split 8,000 / 2,000 keeping each digit's share.
    arrays = None
    if args.tfds:  # the same digits through the local_mnist TFDS builder
        from keras_transformers.data import tfds_builders

        arrays = tfds_builders.mnist_arrays("test", os.path.join(args.data_dir, "mnist-test"), args.tfds_dir)
    train_data, validation_data, info = mnist.mnist_datasets(
        args.data_dir, batch_size=args.batch_size, num_validation=2000, seed=args.seed,
        augment=not args.no_augment, download=True,
        max_examples=args.max_examples, arrays=arrays,
    )
    print(f"backend {keras.backend.backend()}; MNIST: train {info['train_size']:,} / "
          f"validation {info['validation_size']:,} (per digit: {info['validation_counts']})")

    # --- Model: ViT with 4 x 4 patches of the 28 x 28 digits (a 7 x 7 grid + class token).
    model = vit(
        image_size=28, patch_size=4, num_layers=args.num_layers, num_heads=args.num_heads,
        hidden_dim=args.hidden_dim, intermediate_dim=2 * args.hidden_dim, num_classes=10,
        num_channels=1, dropout=args.dropout,
    )
    steps_per_epoch = info["train_size"] // args.batch_size  # full batches only
    # Linear warmup, then cosine decay (section 4.1 and appendix B.1: Adam with warmup and
    # decay); AdamW's decoupled weight decay, none on biases, LayerNorms and the class token.
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        warmup_target=args.learning_rate,
        warmup_steps=args.warmup_epochs * steps_per_epoch,
        decay_steps=max(1, (args.epochs - args.warmup_epochs) * steps_per_epoch),
    )
    optimizer = AdamW(schedule, weight_decay=0.05, global_clipnorm=1.0)  # Keras' update, fused on torch
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "class_token"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    print(f"ViT: {model.count_params():,} parameters, {args.num_layers} layers x "
          f"{args.num_heads} heads, hidden {args.hidden_dim}, 49 patches + class token")

    # --- Training: fit with progress bars, TensorBoard, backups for resuming, checkpoints.
    callbacks, initial_step = common.fit_callbacks(
        args, checkpoint="best.keras", monitor="val_accuracy", mode="max")
    start = time.perf_counter()
    history = model.fit(train_data, validation_data=validation_data, epochs=args.epochs,
                        callbacks=callbacks, shuffle=False, verbose=2 if args.smoke else 1)
    train_minutes = (time.perf_counter() - start) / 60

    # --- Evaluation: accuracy on the 2,000 held-out digits.
    validation_loss, validation_accuracy = (
        float(v) for v in model.evaluate(validation_data, verbose=0))
    print(f"validation accuracy {validation_accuracy:.4f}  loss {validation_loss:.4f}  "
          f"({train_minutes:.1f} min of training)")

    # --- Where the class token looks: last layer per head, and rollout through all layers.
    images = next(iter(validation_data))[0]["images"].numpy()[:4]  # (4, 28, 28, 1)
    scores = visualize.attention_scores(model, {"images": images})
    last = list(scores.values())[-1]  # (4, heads, 50, 50)
    rollout = visualize.attention_rollout(scores)  # (4, 50, 50)
    pictures = {}
    for i, image in enumerate(images):
        heads = last[i, :, 0, 1:].reshape(-1, 7, 7)  # class token -> the 7 x 7 patches
        maps = np.concatenate([heads, rollout[i, 0, 1:].reshape(1, 7, 7)])
        titles = [f"head {h}" for h in range(len(heads))] + ["rollout"]
        pictures[f"class_token_attention_{i}"] = os.path.join(
            args.output, f"class_token_attention_{i}.png")
        visualize.plot_image_attention(
            image, maps, pictures[f"class_token_attention_{i}"], titles=titles,
            title=f"class-token attention, {list(scores)[-1]} and rollout")
    pictures["attention_maps"] = os.path.join(args.output, "attention_maps.png")
    visualize.plot_attention_maps(
        {name: value[:1] for name, value in scores.items()},
        ["cls"] + [f"p{i}" for i in range(49)], ["cls"] + [f"p{i}" for i in range(49)],
        pictures["attention_maps"], title="ViT self-attention, digit 0")
    print(f"attention pictures: class_token_attention_*.png, attention_maps.png in {args.output}")

    # --- Export for TF Serving (serving_default: logits; classify: probabilities and label),
    # and check the reloaded SavedModel against the Keras model.
    export = common.export_and_check(model, {"images": images}, args, classify=True)

    metrics = {
        "backend": keras.backend.backend(),
        "data": {k: v for k, v in info.items() if k != "validation_indices"},
        "parameters": int(model.count_params()),
        "smoke": args.smoke,
        "config": {k: getattr(args, k) for k in PRESETS["full"]},
        "augment": not args.no_augment,
        "initial_step": initial_step.initial_step,
        "steps": int(model.optimizer.iterations),
        "train_minutes": round(train_minutes, 2),
        "validation_loss": validation_loss,
        "validation_accuracy": validation_accuracy,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "pictures": pictures,
        "export": export,
    }
    common.write_metrics(args.output, metrics)
    return metrics


if __name__ == "__main__":
    main()
