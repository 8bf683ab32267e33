"""The losses for imbalanced data, trained: the main job's recipe with each loss, same steps.

    python bench/losses.py                       # every run below, ~4 min each on 2 cores
    python bench/losses.py --only balanced_ce balanced_ce_dice --steps 2200 --seed 1

Balanced: ``shapes_fcn8s`` as shipped (background 74%, each shape ~11% of the pixels),
cross-entropy against cross-entropy + Dice (also at half weight) and + Lovasz-softmax.
Imbalanced: the same with triangles drawn at 0.42 of the size
(``data.class_scale=(1, 1, 0.42)``: triangles are 2.0% of the pixels), cross-entropy
weighted by SegNet's median frequency balancing against cross-entropy + Dice and
cross-entropy + Lovasz-softmax. Each run trains from scratch in a fresh workdir (the same
seed: same initialisation, same batches) and is evaluated on 256 validation images of its
own data; the table gives the mean IoU, the mean Dice, the rare class's IoU and the seconds
of training.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RARE = ("data.class_scale=(1.0, 1.0, 0.42)", "eval_data.class_scale=(1.0, 1.0, 0.42)")
RUNS = {
    "balanced_ce": (),
    "balanced_ce_dice": ("loss.terms='cross_entropy + dice'",),
    "balanced_ce_half_dice": ("loss.terms='cross_entropy + 0.5*dice'",),
    "balanced_ce_lovasz": ("loss.terms='cross_entropy + lovasz'",),
    "rare_ce": RARE,
    "rare_weighted_ce": (*RARE, "loss.class_weights='median_frequency'"),
    "rare_ce_dice": (*RARE, "loss.terms='cross_entropy + dice'"),
    "rare_ce_lovasz": (*RARE, "loss.terms='cross_entropy + lovasz'"),
}


def run(name: str, steps: int | None, root: Path, seed: int | None = None) -> dict:
    from fcnjax import config as config_lib
    from fcnjax import train

    c = config_lib.load_config("shapes_fcn8s")
    config_lib.apply_overrides(c, RUNS[name])
    if seed is not None:  # another initialisation and order of batches, the same data
        c.seed = seed
    if steps is not None:
        c.num_steps = steps
        c.checkpoint.every_steps = steps
    start = time.perf_counter()
    result = train.train_and_evaluate(c, root / name)
    seconds = time.perf_counter() - start
    ev = result["eval"]
    iou, dice = ev["per_class_iou"], ev["per_class_dice"]
    return {
        "run": name,
        "seed": c.seed,
        "steps": c.num_steps,
        "overrides": list(RUNS[name]),
        "mean_iou": ev["mean_iou"],
        "mean_dice": ev["mean_dice"],
        "triangle_iou": iou["triangle"],
        "per_class_iou": iou,
        "per_class_dice": dice,
        "seconds": round(seconds, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS), help="some runs")
    parser.add_argument("--steps", type=int, help="training steps (the recipe's 4,400)")
    parser.add_argument("--seed", type=int, help="the runs' seed (the recipe's 0)")
    parser.add_argument("--json", type=Path, help="write the rows to this file too")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or RUNS:
            rows.append(run(name, args.steps, Path(tmp), args.seed))
            r = rows[-1]
            print(
                f"{r['run']:18s} seed {r['seed']} steps {r['steps']:5d}  "
                f"mean IoU {r['mean_iou']:.4f}  mean Dice {r['mean_dice']:.4f}  "
                f"triangle IoU {r['triangle_iou']:.4f}  "
                f"{r['seconds']:.0f} s",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
