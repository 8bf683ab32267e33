"""The commands that only look: ``fcnjax list`` (recipes, networks), ``fcnjax verify`` of a
config or of a data source given as ``key=value`` pairs, and plain-text ``--help``.

Nothing here trains. Parameter counts are checked against ``model.init`` on real arrays
(small networks) and against the figure the autoencoder's docstring gives.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcnjax import catalog, cli, data, models
from fcnjax import config as config_lib


def run(args, capsys):
    """``(exit status, stdout, stderr)``; argparse's own exits (--help, usage) included."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def table(out: str) -> dict[str, list[str]]:
    """``{NAME: [PARAMETERS, INPUT, REFERENCE]}`` of ``fcnjax list networks``."""
    rows = {}
    for line in out.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=3)
        if line.startswith("  ") and len(parts) == 4 and parts[0] != "NAME":
            rows[parts[0]] = parts[1:]
    return rows


@pytest.fixture(scope="module")
def networks_output():
    """One ``fcnjax list networks`` for the module (some seconds: every network's shapes)."""
    from io import StringIO
    from unittest import mock

    with mock.patch("sys.stdout", new=StringIO()) as out:
        assert cli.main(["list", "networks"]) == 0
    return out.getvalue()


def test_list_recipes_names_each_with_the_first_line_of_its_docstring(capsys):
    code, out, err = run(["list", "recipes"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Recipes") and "fcnjax train --config NAME" in lines[0]
    names = config_lib.config_names()
    assert len(lines) == 1 + len(names) and "default" not in names
    for name, line in zip(names, lines[1:]):
        doc = importlib.import_module(f"fcnjax.configs.{name}").__doc__.strip()
        first = doc.split("\n")[0].replace("``", "")
        assert line.split() == [name, *first.split()], line
    assert "Networks" not in out  # only what was asked for
    shapes = next(line for line in lines if line.split()[0] == "shapes_fcn8s")
    assert "FCN-8s on the generated shapes data" in shapes and "`" not in out


def test_list_networks_shows_every_registered_network_once(networks_output):
    rows = table(networks_output)
    assert list(rows) == list(models.NAMES)
    for name, (_, _, reference) in rows.items():
        assert reference == models.REFERENCES[name] and reference
    assert set(models.REFERENCES) == set(models.NAMES)  # a new network needs its reference
    assert "fcnjax list networks" not in networks_output and "Recipes" not in networks_output


def test_list_networks_counts_trainable_parameters_as_init_does(networks_output):
    rows = table(networks_output)
    # The autoencoder: the lab's figure, in its docstring; its own 28x28x1 input.
    assert rows["autoencoder"][:2] == ["51,459", "28x28x1"]
    assert rows["conv_autoencoder"][:2] == ["51,459", "28x28x1"]
    # A small network, initialised for real: only `params` count, not BatchNorm statistics.
    model = models.get("segnet_basic", num_classes=catalog.NUM_CLASSES)
    variables = jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, *catalog.INPUT_SHAPE)))
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))
    assert rows["segnet_basic"][:2] == [f"{count:,}", "64x64x3"] and "batch_stats" in variables
    # Aliases agree, and FCN-8s has more (its skip layers) than FCN-32s.
    assert rows["fcn_8_vgg"][0] == rows["fcn8s"][0] == rows["fcn"][0]
    assert rows["fcn_32_resnet50"][0] == rows["fcn32s_resnet50"][0]
    count = lambda name: int(rows[name][0].replace(",", ""))  # noqa: E731
    assert count("fcn8s") > count("fcn16s") > count("fcn32s") > count("vgg16") > 10**7
    assert count("resnet152") > count("resnet101") > count("resnet50") > count("resnet18")


def test_parameters_follow_the_network_not_a_table(monkeypatch):
    small = catalog.network("unet_mini")
    wide = models.get("unet_mini", num_classes=catalog.NUM_CLASSES, widths=(64, 128, 256))
    monkeypatch.setattr(models, "get", lambda name, **kwargs: wide)
    assert catalog.network("unet_mini").parameters > 3 * small.parameters


def test_list_with_no_argument_shows_recipes_then_networks(monkeypatch, capsys):
    monkeypatch.setattr(models, "NAMES", ("fcn32s", "autoencoder"))  # fewer, for speed
    code, out, _ = run(["list"], capsys)
    assert code == 0
    recipes, networks = out.split("\n\n")
    assert recipes.startswith("Recipes") and "shapes_fcn8s" in recipes
    assert networks.startswith("Networks") and list(table(networks)) == ["fcn32s", "autoencoder"]
    code, _, err = run(["list", "models"], capsys)
    assert code == 2 and "invalid choice: 'models'" in err
    code, _, err = run(["list", "recipes", "more"], capsys)
    assert code == 2 and "unrecognized arguments: more" in err


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", [None, *_subcommands()])
def test_help_is_plain_text(command, capsys):
    code, out, err = run(["--help"] if command is None else [command, "--help"], capsys)
    assert code == 0 and not err
    assert "`" not in out and ":func:" not in out and ":mod:" not in out, out
    assert "usage: fcnjax" in out


def test_help_points_to_the_listing_and_names_the_exit_statuses(capsys):
    _, top, _ = run(["--help"], capsys)
    for command in _subcommands():
        assert re.search(rf"^    {command}\s+\w", top, re.MULTILINE), command
    assert "exit status" in top and "130/143" in top and "fcnjax list recipes" in top
    _, train, _ = run(["train", "--help"], capsys)
    train = " ".join(train.split())  # argparse wraps the lines
    assert "fcnjax list recipes" in train and "fcnjax list networks" in train
    assert "cae_mnist" not in train and "..." not in train
    _, verify, _ = run(["verify", "--help"], capsys)
    verify = " ".join(verify.split())
    assert "--stats" in verify and "key=value" in verify
    for name in data.SOURCES:
        assert name in verify


def test_verify_a_data_source_given_as_key_value_pairs(capsys):
    code, out, err = run(["verify", "name=shapes", "num_examples=5", "--stats"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "data: Shapes, 5 examples, 0 bad"
    assert lines[1] == "4 classes: background, circle, square, triangle"
    source = data.Shapes(num_examples=5)
    pixels = sum(np.bincount(source[i]["mask"].ravel(), minlength=4) for i in range(5))
    for name, count in zip(source.class_names, pixels):
        assert f"| {name} | {count} | {count / pixels.sum():.2%} |" in out
    weights = data.median_frequency_weights(data.class_counts(source))
    assert lines[-1] == "weights = " + np.array2string(weights, precision=4, separator=", ")
    code, out, _ = run(["verify", "name=shapes", "num_examples=5"], capsys)
    assert code == 0 and out == "data: Shapes, 5 examples, 0 bad\n"  # no --stats: no table


def test_verify_a_config_with_stats_counts_each_split(capsys):
    args = ["verify", "--config", "shapes_fcn8s:runlocal", "--stats", "data.num_examples=6"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "data: Shapes, 6 examples, 0 bad" in out and "eval_data: Shapes" in out
    assert out.count("| class | pixels | share | median-frequency weight |") == 2


@pytest.mark.parametrize(
    "args, words",
    [
        ([], ["verify needs --config NAME", "key=value"]),
        (["--stats"], ["verify needs --config NAME"]),
        (["--config.data.root=/x"], ["verify needs --config NAME"]),
        (["name=imagenet"], ["fcnjax verify: ", "`data.name` must be one of", "'camvid'"]),
        (["name=shapes", "colour=red"], ["fcnjax verify: ", "does not take ['colour']"]),
    ],
)
def test_verify_usage_errors_are_one_line_and_status_2(args, words, capsys):
    code, out, err = run(["verify", *args], capsys)
    assert code == 2, out + err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err  # usage + line
    for word in words:
        assert word in err, err


def test_the_data_command_is_gone():
    assert importlib.util.find_spec("fcnjax.data.__main__") is None
