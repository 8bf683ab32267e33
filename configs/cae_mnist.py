"""The POSTECH lab's convolutional autoencoder on MNIST digits 1, 5 and 6 (2-D latent).

    fcnjax train --config cae_mnist --workdir runs/cae_mnist

Adam (Keras defaults), mean squared error, batch 32, 10 epochs, as the lab (about 566
steps per epoch on the 18,114 training images of 1/5/6). Writes ``latent.png`` (the
latent points of the test digits, coloured by digit) and ``decoded.png`` (the digit
decoded from the latent point (2, -4)). Needs TFDS's ``mnist`` (downloaded and prepared
on first use, without TensorFlow: :mod:`fcnjax.data.prepare`).
"""

from fcnjax.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.task = "autoencoder"
    c.model = dict(name="conv_autoencoder", latent_dim=2)
    c.data = dict(name="tfds", dataset="mnist", split="train", digits=(1, 5, 6))
    c.eval_data = dict(split="test")
    c.input.mode = "none"  # 28x28 as given
    c.input.eval_mode = "none"
    c.input.flip = False  # digits are not mirror-symmetric
    c.input.normalization = "unit"  # [0, 1], as the lab divides by 255
    c.batch_size = 32
    c.num_epochs = 10
    c.optimizer.name = "adam"  # Keras 'adam': lr 1e-3, b1 0.9, b2 0.999, eps 1e-7
    c.optimizer.learning_rate = 1e-3
    c.optimizer.eps = 1e-7
    c.log_every_steps = 100
    c.checkpoint.every_steps = 566
    c.checkpoint.best_metric = "loss"
    c.checkpoint.best_mode = "min"
    c.outputs.latent_points = 500  # the lab scatters 500 random test digits
    c.outputs.decode_point = (2.0, -4.0)
    if arg == "runlocal":
        c.num_epochs = None
        c.num_steps = 4
        c.batch_size = 8
        c.log_every_steps = 2
        c.checkpoint.every_steps = 2
        c.outputs.latent_points = 16
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing.")
    return c
