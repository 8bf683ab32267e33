"""fcnjax's networks as Flax NNX modules (models.to_nnx): an NNX training step equals the
Linen one on the same variables, BatchNorm statistics update in place, dropout follows the
``dropout`` stream; every registered network builds and runs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, traverse_util

from fcnjax import models
from fcnjax.models.unet_mini import UNetMini


def pure(model, kind):
    """The NNX module's variables of ``kind`` as Linen's nested dict of arrays."""
    return nnx.to_pure_dict(nnx.state(model, kind))


def max_diff(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return max(jax.tree.leaves(jax.tree.map(lambda u, v: float(jnp.abs(u - v).max()), a, b)))


def cross_entropy(logits, mask):
    return optax.softmax_cross_entropy_with_integer_labels(logits, mask).mean()


@nnx.jit
def nnx_step(model, optimizer, x, mask):
    def loss_fn(model):
        return cross_entropy(model(x, train=True), mask)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    # flax >= 0.11 (pyproject's floor): update(model, grads); 0.10 took update(grads).
    optimizer.update(model, grads)
    return loss, grads


def test_an_nnx_training_step_equals_linens_and_updates_batch_statistics():
    # keras-segmentation's unet: BatchNorm in submodules of submodules (backbone/...), the
    # nesting flax 0.11's ToNNX loses parameters of after an update (models.nnx_bridge).
    linen = models.get("unet", num_classes=3, width=1 / 16)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(2, 32, 32, 3)), jnp.float32)
    mask = jnp.asarray(rng.integers(0, 3, (2, 32, 32)), jnp.int32)
    model = models.to_nnx(linen, x[:1], rngs=0)
    params, stats = pure(model, nnx.Param), pure(model, nnx.BatchStat)
    assert jax.tree.structure(params) == jax.tree.structure(
        jax.eval_shape(linen.init, jax.random.key(0), x)["params"]
    )

    def linen_loss(p):
        variables = {"params": p, "batch_stats": stats}
        out, new = linen.apply(variables, x, train=True, mutable=["batch_stats"])
        return cross_entropy(out, mask), new["batch_stats"]

    (loss, new_stats), grads = jax.jit(jax.value_and_grad(linen_loss, has_aux=True))(params)
    tx = optax.sgd(0.1, momentum=0.9)
    new_params = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])

    nnx_loss, nnx_grads = nnx_step(model, nnx.Optimizer(model, tx, wrt=nnx.Param), x, mask)
    assert abs(float(nnx_loss) - float(loss)) < 1e-5
    assert max_diff(nnx.to_pure_dict(nnx_grads), grads) < 1e-5
    assert max_diff(pure(model, nnx.Param), new_params) < 1e-6
    assert max_diff(pure(model, nnx.BatchStat), dict(new_stats)) < 1e-6
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, pure(model, nnx.BatchStat))
    assert all(jax.tree.leaves(changed))  # every running mean and variance moved
    # Evaluation uses the running statistics, as Linen's apply with train=False.
    expected = linen.apply({"params": new_params, "batch_stats": dict(new_stats)}, x)
    assert max_diff(model(x), expected) < 1e-5


def test_dropout_follows_the_dropout_stream_in_training_only():
    linen = UNetMini(3, widths=(4, 8, 16), dropout=0.5)  # dropout, no BatchNorm
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 20, 20, 3)), jnp.float32)
    model = models.to_nnx(linen, x, rngs=nnx.Rngs(0, dropout=1))
    variables = {"params": pure(model, nnx.Param)}
    # Evaluation: no dropout, Linen's output.
    assert max_diff(model(x), linen.apply(variables, x)) < 1e-6
    # A call's dropout key is its stream's next, fold_in(stream key, count): rngs given
    # to the call start at count 0.
    key = jax.random.key(5)
    ours = model(x, train=True, rngs=nnx.Rngs(dropout=key))
    rngs = {"dropout": jax.random.fold_in(key, 0)}
    assert max_diff(ours, linen.apply(variables, x, train=True, rngs=rngs)) < 1e-6
    assert max_diff(ours, model(x)) > 1e-3
    assert max_diff(ours, model(x, train=True, rngs=nnx.Rngs(dropout=6))) > 1e-3
    # The module's own stream advances: two training calls drop different units; a
    # module built with another dropout seed (same parameters) drops others again.
    first, second = model(x, train=True), model(x, train=True)
    assert max_diff(first, second) > 1e-3
    other = models.to_nnx(linen, x, rngs=nnx.Rngs(0, dropout=2))
    assert max_diff(pure(other, nnx.Param), variables["params"]) == 0
    assert max_diff(other(x, train=True), first) > 1e-3


def shapes(tree):
    return {k: (v.shape, v.dtype) for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def tiny(name):
    """The network ``name`` at tiny width and an input it takes."""
    fields = set(models.fields(name))
    kwargs = {"num_classes": 3, "width": 1 / 16, "widths": (4, 8)}
    model = models.get(name, **{k: v for k, v in kwargs.items() if k in fields})
    # The autoencoder is the lab's MNIST network: it takes 28x28 grey images only.
    shape = (2, 28, 28, 1) if name in ("autoencoder", "conv_autoencoder") else (2, 32, 32, 3)
    return model, jax.ShapeDtypeStruct(shape, jnp.float32)


@pytest.mark.parametrize("name", models.NAMES)
def test_every_network_builds_and_runs_as_an_nnx_module(name):
    # Shapes only (nnx.eval_shape): the variables and outputs, in evaluation and in
    # training, are Linen's.
    linen, x = tiny(name)

    def build_and_run(x):
        model = models.to_nnx(linen, x, rngs=0)
        return model, model(x), model(x, train=True)

    model, out, train_out = nnx.eval_shape(build_and_run, x)
    linen_out, variables = jax.eval_shape(
        functools.partial(linen.init_with_output, train=False), jax.random.key(0), x
    )
    assert shapes(pure(model, nnx.Param)) == shapes(variables["params"])
    assert shapes(pure(model, nnx.BatchStat)) == shapes(variables.get("batch_stats", {}))
    assert jax.tree.map(jnp.shape, out) == jax.tree.map(jnp.shape, linen_out)
    assert jax.tree.map(jnp.shape, train_out) == jax.tree.map(jnp.shape, linen_out)
