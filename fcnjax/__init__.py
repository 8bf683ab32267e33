"""fcnjax: segmentation and generation with transposed convolutions in JAX.

Training, prediction and export (which import orbax) are imported on demand:
``from fcnjax import train, predict, export``; what runs a training is :mod:`fcnjax.training`.
"""

from fcnjax import data, layers, losses, metrics, models, ops, viz, weights

__version__ = "0.1.0"
__all__ = ["data", "layers", "losses", "metrics", "models", "ops", "viz", "weights"]
