"""How well can a stride-8 network segment ``shapes``? An upper bound for FCN-8s.

    python bench/shapes_ceiling.py

FCN-8s scores classes on a grid of stride 8 and upsamples the scores bilinearly. Give it
the best scores such a grid can hold, the log of each cell's true class fractions, and
the mean IoU of their bilinear upsampling is (roughly) the best FCN-8s can reach: its
errors are rounded corners and blurred thin parts, whatever it learns. This prints that
bound for several image sizes and object sizes of the ``shapes`` source (256 validation
images each), which is how the ``shapes_fcn8s`` config chose its data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fcnjax import metrics
from fcnjax.data import Shapes

CASES = [  # (image size, radius_range, max_objects)
    (64, (0.09, 0.2), 4),  # the source's defaults at 64x64
    (64, (0.15, 0.3), 3),
    (96, (0.09, 0.2), 4),
    (96, (0.15, 0.3), 3),  # the shapes_fcn8s config
    (128, (0.09, 0.2), 4),
    (128, (0.15, 0.3), 3),
]


def ceiling(size: int, radius_range, max_objects: int, n: int = 256, stride: int = 8):
    source = Shapes(
        n, size=size, split="validation", radius_range=radius_range, max_objects=max_objects
    )
    masks = np.stack([source[i]["mask"] for i in range(n)]).astype(np.int32)
    cells = -(-size // stride)
    pad = cells * stride - size
    onehot = jax.nn.one_hot(jnp.pad(masks, ((0, 0), (0, pad), (0, pad)), mode="edge"), 4)
    fractions = onehot.reshape(n, cells, stride, cells, stride, 4).mean((2, 4))
    scores = jax.image.resize(
        jnp.log(fractions + 1e-3), (n, cells * stride, cells * stride, 4), "bilinear"
    )[:, :size, :size]
    cm = metrics.confusion_matrix(masks, scores.argmax(-1), 4)
    return metrics.segmentation_metrics(np.asarray(cm), list(Shapes.class_names))


def main() -> None:
    print("best mean IoU of bilinearly upsampled stride-8 scores (shapes, 256 validation images)")
    print(f"{'size':>5} {'radius_range':>14} {'objects':>8} {'mean IoU':>9}  per class")
    for size, radius_range, max_objects in CASES:
        m = ceiling(size, radius_range, max_objects)
        per_class = " ".join(f"{v:.3f}" for v in m["per_class_iou"].values())
        print(
            f"{size:>5} {str(radius_range):>14} {max_objects:>8} {m['mean_iou']:>9.3f}  {per_class}"
        )


if __name__ == "__main__":
    main()
