"""The training-history chart: epochs are whole numbers, and so are its x-axis ticks."""
import pytest

from engine.plots import history_figure, plot_history


def history(epochs: int) -> list[dict]:
    return [dict(epoch=e, train_loss=1 / e, val_loss=1.1 / e, train_accuracy=0.9, val_accuracy=0.91, lr=0.1 / e)
            for e in range(1, epochs + 1)]


@pytest.mark.parametrize("epochs", [1, 2, 3, 4, 5, 7, 16, 20, 50])
def test_epoch_ticks_are_whole_numbers(epochs):
    fig = history_figure(history(epochs))
    fig.canvas.draw()
    for ax in fig.axes:
        low, high = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if low <= t <= high]
        assert shown, f"no tick shown for {epochs} epoch(s)"
        assert all(float(t).is_integer() for t in shown), shown
        assert all(1 <= t <= epochs for t in shown)
        labels = [label.get_text() for label in ax.get_xticklabels() if label.get_text()]
        assert all("." not in text for text in labels), labels


def test_plot_history_writes_a_png(tmp_path):
    path = plot_history(history(3), tmp_path / "plots" / "history.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
