"""``python manage.py train``: train one architecture on MNIST and write a checkpoint."""
from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from classifier.lifecycle import model_version_register_file
from engine.data import DataError, load_mnist
from engine.evaluate import predict_logits
from engine.job import train_to_checkpoint
from engine.plots import plot_history, plot_predictions
from engine.trainer import recipe
from mnistsite.errors import ApplicationError
from training.spec import RunOption, run_options


CLI_DEFAULTS = {"arch": "cnn"}  # the command trains the flagship unless told otherwise


def _add_option(parser: CommandParser, option: RunOption, *, default: Any) -> None:
    """A ``RunSpec`` option as ``--kebab-case`` argument, with the option's bounds checked by argparse."""

    def convert(text: str) -> Any:
        try:
            value = {"int": int, "float": float, "object": json.loads}.get(option.kind, str)(text)
            return option.check(value)
        except ValueError as exc:  # json.JSONDecodeError is one
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser.add_argument(f"--{option.name.replace('_', '-')}", type=convert, default=default,
                        choices=option.choices or None, help=option.help)


class Command(BaseCommand):
    help = (
        "Train a network on MNIST (data from MNIST_ROOT) and save a checkpoint. Options left out take the "
        "architecture's recipe defaults. With --target-accuracy the run stops as soon as MNIST test accuracy, "
        "checked four times per epoch, reaches the target (a speed benchmark, not a way to pick a model); "
        "unless --epochs, --batch-size or --lr is given it trains with the architecture's fast recipe "
        "(engine.trainer.FAST_RECIPES: a short one-cycle, no habit synthesis, a moving average of the weights "
        "checked and kept, checks from the end of the warm-up)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        for option in run_options():
            if option.cli:
                _add_option(parser, option, default=CLI_DEFAULTS.get(option.name, option.default))
        parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
        parser.add_argument("--label-smoothing", type=float)
        parser.add_argument("--no-augment", action="store_true", help="train on the images as they are")
        parser.add_argument("--target-accuracy", type=float, help="stop once MNIST test accuracy reaches this (e.g. 0.99); "
                                 "trains with the fast recipe unless --epochs/--batch-size/--lr is given")
        parser.add_argument("--out", help="checkpoint path (default: MEDIA_ROOT/checkpoints/<arch>-<time>.pt)")
        parser.add_argument("--plots", help="folder for history.png and predictions.png")
        parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
        parser.add_argument("--mnist-root", default=None, help="defaults to the MNIST_ROOT setting")
        parser.add_argument("--register", action="store_true",
                            help="register the checkpoint as a candidate model version (evaluated on the field set too)")
        parser.add_argument("--name", default="", help="with --register: the version name (default: the architecture)")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["threads"]:
            torch.set_num_threads(opts["threads"])
        try:
            config = recipe(
                opts["arch"],
                arch_config=opts["arch_config"],
                epochs=opts["epochs"],
                batch_size=opts["batch_size"],
                lr=opts["lr"],
                seed=opts["seed"],
                device=opts["device"],
                precision=opts["precision"],
                label_smoothing=opts["label_smoothing"],
                val_size=opts["val_size"],
                augment=False if opts["no_augment"] else None,
                target_accuracy=opts["target_accuracy"],
            )
            config.validate()
        except (ValueError, TypeError) as exc:
            raise CommandError(str(exc)) from None
        out = Path(opts["out"]) if opts["out"] else (
            Path(settings.MEDIA_ROOT) / "checkpoints" / f"{config.arch}-{datetime.now():%Y%m%d-%H%M%S}.pt"
        )
        root = opts["mnist_root"] or settings.MNIST_ROOT
        # The bar and the lines above it go to the raw stream: tqdm redraws with "\r", and the OutputWrapper
        # would end every write with a newline. No bar when stderr is not a terminal (pipes, CI logs).
        stream = self.stderr._out
        state: dict[str, Any] = {}
        bar: tqdm | None = None

        def on_event(event: dict[str, Any]) -> None:
            nonlocal bar
            kind = event["type"]
            if kind == "start":
                state.update(event)
                self.stdout.write(
                    f"training {event['arch']} ({event['num_parameters']:,} parameters) on {event['device']} "
                    f"({event['precision']}): {event['train_size']:,} training / {event['val_size']:,} validation "
                    f"images, {event['epochs']} epochs x {event['steps_per_epoch']} steps"
                )
                bar = tqdm(total=event["total_steps"], unit="step", file=stream, leave=False, dynamic_ncols=True,
                           disable=None)
            elif kind == "batch" and bar is not None:
                bar.set_description_str(f"epoch {event['epoch']}/{state['epochs']}", refresh=False)
                bar.set_postfix_str(f"loss {event['loss']:.3f}, lr {event['lr']:.4f}, "
                                    f"{event['samples_per_s']:,.0f} samples/s", refresh=False)
                bar.update(event["step"] - bar.n)
            elif kind == "check":
                tqdm.write(
                    f"  check at step {event['step']}: test accuracy {100 * event['accuracy']:.2f}% "
                    f"after {event['train_seconds']:.1f} s of training",
                    file=stream,
                )
            elif kind == "epoch":
                val = (
                    f"  val loss {event['val_loss']:.4f} acc {100 * event['val_accuracy']:.2f}%"
                    if "val_accuracy" in event else ""
                )
                tqdm.write(
                    f"epoch {event['epoch']:>2}/{event['total_epochs']}  train loss {event['train_loss']:.4f} "
                    f"acc {100 * event['train_accuracy']:.2f}%{val}  lr {event['lr']:.4f}  {event['seconds']:.1f} s",
                    file=stream,
                )

        try:
            trained = train_to_checkpoint(config, mnist_root=root, out=out, callback=on_event,
                                          mnist_limit=opts["mnist_limit"])
        except DataError as exc:
            raise CommandError(str(exc)) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        finally:
            if bar is not None:
                bar.close()
        result, metrics = trained.result, trained.checkpoint["metrics"]

        if opts["plots"]:
            self._plots(Path(opts["plots"]), trained, root)

        rate = result.samples_seen / max(result.train_seconds, 1e-9)
        timing = (
            f"training time: {result.train_seconds:.2f} s ({result.wall_seconds:.1f} s wall, "
            f"{rate:,.0f} samples/s, {result.device}, {result.precision})"
        )
        if config.target_accuracy is not None:
            reached = result.status == "target_reached"
            epochs_done = result.samples_seen / state["train_size"]
            self.stdout.write(
                f"{'reached' if reached else 'did not reach'} target {100 * config.target_accuracy:.2f}%: "
                f"test accuracy {100 * metrics['test_accuracy']:.2f}% after {result.samples_seen:,} samples "
                f"({epochs_done:.2f} epochs); {timing}; saved {trained.path}"
            )
            if not reached:
                raise CommandError("target accuracy not reached")
            return
        val_acc = (result.val_metrics or {}).get("accuracy")
        val = f"validation {100 * val_acc:.2f}% (epoch {result.best_epoch} selected); " if val_acc is not None else ""
        saved = f"saved {trained.path} (sha256 {trained.sha256[:12]})" if trained.path else "not saved"
        self.stdout.write(
            f"{config.arch}: test accuracy {100 * metrics['test_accuracy']:.2f}% (n={metrics['test_n']}); {val}"
            f"{len(result.history)} epochs, {timing}; {saved}"
        )
        if opts["register"] and trained.path:
            self._register(trained.path, opts["name"])

    def _register(self, path: Path, name: str) -> None:
        try:
            version = model_version_register_file(path=path, name=name)
        except ApplicationError as exc:
            raise CommandError(f"not registered: {exc.message}") from None
        field = version.metrics.get("field_accuracy")
        self.stdout.write(
            f"registered {version.label} (id {version.pk}) as a candidate"
            + (f"; field set accuracy {100 * field:.2f}% (n={version.metrics.get('field_n')})" if field is not None
               else "; field set empty")
        )

    def _plots(self, folder: Path, trained: Any, root: Any) -> None:
        result = trained.result
        title = f"{trained.checkpoint['arch']}: test accuracy {100 * trained.checkpoint['metrics']['test_accuracy']:.2f}%"
        history_png = plot_history(result.history, folder / "history.png", title=title)
        test = load_mnist(root, "test")
        probs = predict_logits(result.model, test.images).softmax(dim=1)
        wrong = (probs.argmax(1) != test.labels).nonzero().flatten()[:20]
        first = torch.arange(40)
        picks = torch.cat([first, wrong])
        grid_png = plot_predictions(
            test.images[picks], test.labels[picks], probs[picks], folder / "predictions.png",
            title=f"{title} — first 40 test images, then mistakes (red)",
        )
        self.stdout.write(f"plots: {history_png}, {grid_png}")
