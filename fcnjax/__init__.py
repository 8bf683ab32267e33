"""fcnjax: segmentation and generation with transposed convolutions in JAX."""

from fcnjax import data, layers, models, ops, weights

__version__ = "0.1.0"
__all__ = ["data", "layers", "models", "ops", "weights"]
