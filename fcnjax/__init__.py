"""fcnjax: segmentation and generation with transposed convolutions in JAX.

Training, prediction and checkpoints (which import orbax) are imported on demand:
``from fcnjax import train, predict``.
"""

from fcnjax import data, layers, losses, metrics, models, ops, optim, viz, weights

__version__ = "0.1.0"
__all__ = ["data", "layers", "losses", "metrics", "models", "ops", "optim", "viz", "weights"]
