"""fcnjax: segmentation and generation with transposed convolutions in JAX."""

from fcnjax import layers, models, ops, weights

__version__ = "0.1.0"
__all__ = ["layers", "models", "ops", "weights"]
