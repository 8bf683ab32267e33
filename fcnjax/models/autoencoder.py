"""The POSTECH segmentation lab's convolutional autoencoder: 28x28 digits, 2-D latent."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from fcnjax.layers import ConvTranspose
from fcnjax.typing import Array, ArrayLike, DTypeLike

__all__ = ["ConvAutoencoder"]


class ConvAutoencoder(nn.Module):
    """The POSTECH lab's autoencoder, layer for layer (Keras' default initialisers).

    Encoder: Conv(32, 3x3, stride 2, SAME, ReLU) -> Conv(64, 3x3, stride 2, SAME, ReLU) ->
    Conv(latent_dim, 7x7, VALID). Decoder: ConvTranspose(64, 7x7, stride 1, VALID, ReLU)
    -> ConvTranspose(32, 3x3, stride 2, SAME, ReLU) -> ConvTranspose(channels, 7x7,
    stride 2, SAME). 51,459 parameters with the defaults on 28x28x1 images. The output is
    linear (the lab trains it with mean squared error).

    Use ``apply(..., method="encode")`` for the latent points (the lab's scatter plot)
    and ``apply(..., method="decode")`` to generate from one (the lab decodes (2, -4)).

    Attributes:
      latent_dim: size of the code.
      features: channels of the two strided convolutions (and, mirrored, the decoder).
      channels: image channels.
      kernel_init: initializer of every kernel (Keras' glorot_uniform by default).
      dtype: computation dtype; param_dtype: parameter dtype.

    >>> import jax, jax.numpy as jnp
    >>> model = ConvAutoencoder()
    >>> params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> sum(p.size for p in jax.tree.leaves(params))
    51459
    >>> encode = jax.jit(lambda p, x: model.apply(p, x, method="encode"))
    >>> decode = jax.jit(lambda p, z: model.apply(p, z, method="decode"))
    >>> z = encode(params, jnp.zeros((5, 28, 28, 1)))
    >>> z.shape, decode(params, jnp.array([[2., -4.]])).shape
    ((5, 2), (1, 28, 28, 1))
    """

    latent_dim: int = 2
    features: tuple[int, int] = (32, 64)
    channels: int = 1
    kernel_init: Callable = nn.initializers.glorot_uniform()
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def setup(self):
        for name in ("latent_dim", "channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be a positive int; got {getattr(self, name)!r}.")
        if len(self.features) != 2 or any(int(f) < 1 for f in self.features):
            raise ValueError(f"`features` must be two positive ints; got {self.features!r}.")
        kw = dict(kernel_init=self.kernel_init, dtype=self.dtype, param_dtype=self.param_dtype)
        f1, f2 = self.features
        self.enc1 = nn.Conv(f1, (3, 3), (2, 2), padding="SAME", **kw)
        self.enc2 = nn.Conv(f2, (3, 3), (2, 2), padding="SAME", **kw)
        self.enc3 = nn.Conv(self.latent_dim, (7, 7), padding="VALID", **kw)
        self.dec1 = ConvTranspose(f2, 7, 1, "VALID", **kw)
        self.dec2 = ConvTranspose(f1, 3, 2, "SAME", **kw)
        self.dec3 = ConvTranspose(self.channels, 7, 2, "SAME", **kw)

    def encode(self, x: ArrayLike) -> Array:
        """``(N, 28, 28, channels)`` images -> ``(N, latent_dim)`` codes."""
        x = jnp.asarray(x)
        if x.ndim != 4 or x.shape[1:] != (28, 28, self.channels):
            raise ValueError(
                f"ConvAutoencoder expects images of shape (N, 28, 28, {self.channels}); got "
                f"{x.shape}."
            )
        h = nn.relu(self.enc1(x))
        h = nn.relu(self.enc2(h))
        return self.enc3(h).reshape(x.shape[0], self.latent_dim)

    def decode(self, z: ArrayLike) -> Array:
        """``(N, latent_dim)`` or ``(N, 1, 1, latent_dim)`` codes -> ``(N, 28, 28, channels)``."""
        z = jnp.asarray(z)
        if z.ndim == 2:
            z = z[:, None, None, :]
        if z.ndim != 4 or z.shape[1:] != (1, 1, self.latent_dim):
            raise ValueError(
                f"decode expects codes of shape (N, {self.latent_dim}) or (N, 1, 1, "
                f"{self.latent_dim}); got {z.shape}."
            )
        h = nn.relu(self.dec1(z))
        h = nn.relu(self.dec2(h))
        return self.dec3(h)

    def __call__(self, x: ArrayLike, train: bool = False) -> Array:
        """Reconstruction ``(N, 28, 28, channels)``; ``train`` is accepted for uniformity."""
        del train
        return self.decode(self.encode(x))
