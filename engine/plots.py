"""Pictures of a training run: the history chart and a grid of sample predictions (PNG files)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_history(history: list[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Loss and accuracy per epoch (train vs validation) and the learning rate, side by side (a PNG)."""
    fig = history_figure(history, title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def history_figure(history: list[dict[str, Any]], *, title: str = "") -> Figure:
    """The figure ``plot_history`` saves; epochs are whole numbers, so are the ticks of its x axes."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    ax = axes[0]
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train (augmented, label-smoothed)")
    if any("val_loss" in h for h in history):
        ax.plot(epochs, [h.get("val_loss") for h in history], "o-", label="validation")
    ax.set(title="loss", xlabel="epoch")
    ax.legend()
    ax = axes[1]
    ax.plot(epochs, [100 * h["train_accuracy"] for h in history], "o-", label="train (augmented)")
    if any("val_accuracy" in h for h in history):
        ax.plot(epochs, [100 * h.get("val_accuracy", float("nan")) for h in history], "o-", label="validation")
    ax.set(title="accuracy (%)", xlabel="epoch")
    ax.legend()
    ax = axes[2]
    ax.plot(epochs, [h["lr"] for h in history], "o-", color="tab:green")
    ax.set(title="learning rate (end of epoch)", xlabel="epoch")
    for ax in axes:
        if epochs:  # half an epoch of room either side, so even one epoch gets a whole-number tick
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if title:
        fig.suptitle(title)
    return fig


def plot_predictions(
    images: torch.Tensor,
    labels: torch.Tensor,
    probabilities: torch.Tensor,
    path: str | Path,
    *,
    columns: int = 10,
    title: str = "",
) -> Path:
    """A grid of images with predicted digit and confidence; mistakes are titled in red."""
    n = len(images)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.45), squeeze=False)
    conf, pred = probabilities.max(dim=1)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].float().squeeze()
        ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=img.max().item() or 1)
        wrong = int(pred[i]) != int(labels[i])
        text = f"{int(pred[i])} {100 * float(conf[i]):.0f}%" + (f" (true {int(labels[i])})" if wrong else "")
        ax.set_title(text, fontsize=7, color="red" if wrong else "black")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
