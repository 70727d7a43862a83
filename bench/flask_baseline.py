"""The baseline: a minimal Flask + torch predict app of the kind MNIST demos ship.

Decode the base64 PNG, convert to grayscale, resize the whole canvas to 28x28, invert, run the
model, return JSON. Nothing is stored, nothing is validated, the model is loaded at import time,
and it is served by Flask's own threaded server, as such demos are.

    python bench/flask_baseline.py --port 8802
"""
from __future__ import annotations

import argparse
import base64
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from PIL import Image  # noqa: E402

from engine.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402

torch.set_num_threads(1)
model = model_from_checkpoint(load_checkpoint(REPO / "training" / "shipped" / "cnn.pt"))
app = Flask(__name__)


def demo_input(image: Image.Image) -> torch.Tensor:
    """What such a demo feeds its model: the whole canvas in grey, resized to 28x28, inverted: ``[1,1,28,28]``."""
    small = image.convert("L").resize((28, 28))
    return torch.tensor(255 - np.array(small), dtype=torch.float32).div(255).view(1, 1, 28, 28)


@app.post("/predict")
def predict():
    data = request.get_json()["image"]
    if "," in data:
        data = data.split(",", 1)[1]
    x = demo_input(Image.open(io.BytesIO(base64.b64decode(data))))
    with torch.no_grad():
        probabilities = torch.softmax(model(x), dim=1)[0].tolist()
    return jsonify({"digit": int(np.argmax(probabilities)), "probabilities": probabilities})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8802)
    args = parser.parse_args()
    app.run(host="127.0.0.1", port=args.port, threaded=True)
