"""fcnjax: segmentation and generation with transposed convolutions in JAX."""

from fcnjax import ops

__version__ = "0.1.0"
__all__ = ["ops"]
