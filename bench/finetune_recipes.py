"""Fine-tune recipes compared on the real pen-drawn digits, in one process (minutes, not hours).

``bench/learning_from_corrections.py`` measures the whole loop through the site (API, worker,
registry) and takes a fresh site per point; this one asks only the question a recipe change raises:
trained on three groups' corrected drawings, how well does the fine-tuned flagship read the fourth?
For each recipe and each held-out group it

1. takes the other three groups' digits, each rendered once as a canvas (variant ``index % 3``, as
   the learning benchmark's simulated users draw them) and preprocessed by the site's pipeline —
   the 28x28 inputs a labelled prediction stores;
2. fine-tunes the base checkpoint on them with ``engine.trainer.finetune_recipe`` (what
   ``POST /api/retrain/`` with ``base_version`` does), the recipe's options overridden by the spec;
3. scores the held-out group's digits in all three renderings as the site serves the model (the base
   checkpoint's temperature and test-time views), and MNIST test.

Prints a table per recipe (before, after, MNIST test after, training seconds) and the weighted
leave-one-group-out accuracy. A spec is ``NAME=JSON`` with fine-tune options, e.g.
``long='{"epochs": 4, "extra_repeat": 8}'``; ``default={}`` is the API's recipe.

``--question population`` asks the other question, the one a deployed site faces: its corrections come
from the people who use it, and its next visitors are new writers of that same population. The writers
of every group are split in two (``bench.strokes.split_writers``, seeded); the "users" half's digits
(variant ``index % 3``, less a seeded fifth kept out as the site keeps its field set) are the
corrections, the first N of them in a seeded order for each ``--points`` N; the fine-tuned model
scores the other half's writers in all three renderings, per group and pooled, and MNIST test.

    MNIST_ROOT=... python bench/finetune_recipes.py [--recipe NAME=JSON ...] [--holdout ced,tos,uqb,val]
                                                   [--question leave-one-out|population]
                                                   [--points 0,250,1000,all] [--seed 0]
                                                   [--checkpoint training/shipped/cnn.pt] [--data PATH]
                                                   [--threads 2] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import numpy as np  # noqa: E402

from bench.learning_from_corrections import parse_points  # noqa: E402
from bench.strokes import default_cache_dir, rendered_set, split_writers  # noqa: E402
from engine.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from engine.data import load_mnist  # noqa: E402
from engine.serving import checkpoint_temperature, checkpoint_tta, predict_probabilities  # noqa: E402
from engine.trainer import FINETUNE_MNIST_LIMIT, TrainingData, config_summary, finetune_recipe, train  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "strokes-dev" / "strokes.json.gz"
GROUPS = ("ced", "tos", "uqb", "val")
FIELD_SET_SHARE = 0.2  # the site keeps about a fifth of the labelled drawings out of training


def parse_recipe(text: str) -> tuple[str, dict[str, Any]]:
    name, _, spec = text.partition("=")
    try:
        options = json.loads(spec or "{}")
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{name}: not JSON ({exc})") from None
    if not name or not isinstance(options, dict):
        raise argparse.ArgumentTypeError("a recipe is NAME=JSON object")
    return name, options


def scored(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, temperature: float, tta: str
           ) -> tuple[float, Counter]:
    """Accuracy (%) as served, and the confusions as ``"true>answer"`` counts."""
    model.eval()
    answers = torch.cat([
        predict_probabilities(model, x[i : i + 1024], temperature=temperature, tta=tta).argmax(1)
        for i in range(0, len(x), 1024)
    ])
    wrong = answers != y
    confusions = Counter(f"{int(t)}>{int(a)}" for t, a in zip(y[wrong], answers[wrong]))
    return 100.0 * float((~wrong).float().mean()), confusions


def population_cases(rendered: Any, seed: int) -> tuple[list[int], list[int]]:
    """The users' corrections (rendering indices, in the order they arrive) and the visitors' renderings."""
    users = split_writers(rendered.writer, seed=seed)
    own_variant = [i for i, w in enumerate(rendered.writer) if w in users and i % 3 == rendered.index[i] % 3]
    rng = np.random.default_rng(seed)
    order = [own_variant[i] for i in rng.permutation(len(own_variant))]
    kept = rng.random(len(order)) >= FIELD_SET_SHARE
    corrections = [i for i, keep in zip(order, kept) if keep]
    visitors = [i for i, w in enumerate(rendered.writer) if w not in users]
    return corrections, visitors


def run_population(args: argparse.Namespace, rendered: Any, recipes: list[tuple[str, dict[str, Any]]],
                   checkpoint: dict[str, Any], base: torch.nn.Module, mnist: Any, test_x: torch.Tensor,
                   test_y: torch.Tensor) -> dict[str, Any]:
    temperature, tta = checkpoint_temperature(checkpoint), checkpoint_tta(checkpoint)
    corrections, visitors = population_cases(rendered, args.seed)
    groups = np.asarray(rendered.group)
    x, y = rendered.x[visitors], rendered.y[visitors]
    visitor_groups = groups[visitors]

    def per_group(model: torch.nn.Module) -> dict[str, Any]:
        model.eval()
        with torch.no_grad():
            answers = torch.cat([predict_probabilities(model, x[i : i + 1024], temperature=temperature, tta=tta).argmax(1)
                                 for i in range(0, len(x), 1024)])
        right = (answers == y).numpy()
        out = {g: 100.0 * float(right[visitor_groups == g].mean()) for g in GROUPS if (visitor_groups == g).any()}
        out["pooled"] = 100.0 * float(right.mean())
        return out

    before = per_group(base)
    n = {g: int((visitor_groups == g).sum()) for g in GROUPS}
    print(f"\npopulation: {len(corrections):,} corrections from half the writers of every group (a fifth more kept "
          f"out as the field set); scored on the other half's {len(visitors):,} renderings "
          f"({', '.join(f'{g} {n[g]}' for g in GROUPS)})", flush=True)
    print(f"  before any fine-tune: " + "  ".join(f"{g} {v:.2f}" for g, v in before.items()), flush=True)
    results: dict[str, Any] = {"before": before, "n": n, "corrections": len(corrections)}
    for name, options in recipes:
        limit = options.get("mnist_limit", FINETUNE_MNIST_LIMIT)
        config = finetune_recipe(str(checkpoint["arch"]), **{k: v for k, v in options.items() if k != "mnist_limit"})
        images, labels = (mnist.images[:limit], mnist.labels[:limit]) if limit else (mnist.images, mnist.labels)
        print(f"\n== {name}: {json.dumps(options)} (MNIST rehearsal: {len(labels):,} images)", flush=True)
        rows = []
        for point in args.points:
            count = len(corrections) if point is None else min(point, len(corrections))
            if count == 0:
                continue
            chosen = corrections[:count]
            data = TrainingData(images=images, labels=labels, extra_images=rendered.x[chosen],
                                extra_labels=rendered.y[chosen])
            started = time.perf_counter()
            result = train(config, data, init_state=checkpoint["state_dict"])
            seconds = time.perf_counter() - started
            after = per_group(result.model)
            mnist_after, _ = scored(result.model, test_x, test_y, temperature=temperature, tta="none")
            rows.append({"corrections": count, "after": after, "mnist_test_after": mnist_after, "train_seconds": seconds})
            print(f"  {count:5} corrections: " + "  ".join(f"{g} {v:.2f}" for g, v in after.items())
                  + f"   MNIST test {mnist_after:.2f}%   {seconds:.0f} s", flush=True)
        results[name] = {"options": options, "config": config_summary(config), "points": rows}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", action="append", type=parse_recipe, metavar="NAME=JSON",
                        help="fine-tune options over the API's recipe (repeatable; default: default={})")
    parser.add_argument("--holdout", default=",".join(GROUPS), help="groups to hold out, one at a time")
    parser.add_argument("--checkpoint", type=Path, default=REPO / "training" / "shipped" / "cnn.pt")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="strokes.json.gz of the development set")
    parser.add_argument("--mnist-root", default=os.environ.get("MNIST_ROOT"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for training")
    parser.add_argument("--question", choices=("leave-one-out", "population"), default="leave-one-out",
                        help="leave one writer group out, or learn a population (new writers of the groups corrected)")
    parser.add_argument("--points", type=parse_points, default=parse_points("all"),
                        help="population: numbers of corrections to fine-tune on ('all' = every one)")
    parser.add_argument("--seed", type=int, default=0, help="population: the writers' split and the corrections' order")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not args.mnist_root:
        parser.error("set MNIST_ROOT or pass --mnist-root")
    recipes = args.recipe or [("default", {})]
    holdouts = [g for g in args.holdout.split(",") if g]
    torch.set_num_threads(max(1, args.threads))

    rendered = rendered_set(args.data, seed=0, variants=3, cache_dir=default_cache_dir())
    groups = rendered.group
    checkpoint = load_checkpoint(args.checkpoint)
    temperature, tta = checkpoint_temperature(checkpoint), checkpoint_tta(checkpoint)
    arch = str(checkpoint["arch"])
    mnist = load_mnist(args.mnist_root, "train")
    test = load_mnist(args.mnist_root, "test")
    test_x = test.images.float().div(255).unsqueeze(1)
    base = model_from_checkpoint(checkpoint)
    if args.question == "population":
        summary = run_population(args, rendered, recipes, checkpoint, base, mnist, test_x, test.labels)
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2, default=str))
        return

    results: dict[str, Any] = {}
    for name, options in recipes:
        limit = options.get("mnist_limit", FINETUNE_MNIST_LIMIT)  # a run option, not a training one
        config = finetune_recipe(arch, **{k: v for k, v in options.items() if k != "mnist_limit"})
        images, labels = (mnist.images[:limit], mnist.labels[:limit]) if limit else (mnist.images, mnist.labels)
        print(f"\n== {name}: {json.dumps(options)} (MNIST rehearsal: {len(labels):,} images)", flush=True)
        rows = {}
        for held in holdouts:
            trained_on = [i for i, g in enumerate(groups) if g != held and i % 3 == rendered.index[i] % 3]
            scored_on = [i for i, g in enumerate(groups) if g == held]
            x, y = rendered.x[scored_on], rendered.y[scored_on]
            before, _ = scored(base, x, y, temperature=temperature, tta=tta)
            data = TrainingData(images=images, labels=labels, extra_images=rendered.x[trained_on],
                                extra_labels=rendered.y[trained_on])
            started = time.perf_counter()
            result = train(config, data, init_state=checkpoint["state_dict"])
            seconds = time.perf_counter() - started
            after, confusions = scored(result.model, x, y, temperature=temperature, tta=tta)
            mnist_after, _ = scored(result.model, test_x, test.labels, temperature=temperature, tta="none")
            rows[held] = {"n": len(scored_on), "drawings_trained": len(trained_on), "before": before, "after": after,
                          "mnist_test_after": mnist_after, "train_seconds": seconds,
                          "top_confusions": confusions.most_common(4)}
            print(f"  {held:4} n={len(scored_on):5}  {before:6.2f}% -> {after:6.2f}%   MNIST test {mnist_after:6.2f}%   "
                  f"{seconds:5.0f} s   {', '.join(f'{k} x{v}' for k, v in confusions.most_common(4))}", flush=True)
        n = sum(r["n"] for r in rows.values())
        before = sum(r["before"] * r["n"] for r in rows.values()) / n
        after = sum(r["after"] * r["n"] for r in rows.values()) / n
        print(f"  leave one group out (n={n:,}): {before:.2f}% -> {after:.2f}%", flush=True)
        results[name] = {"options": options, "config": config_summary(config), "groups": rows,
                         "before": before, "after": after, "n": n}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
