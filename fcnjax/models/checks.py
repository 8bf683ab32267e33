"""Arguments of the networks that would build no network, or one that learns nothing.

A model given ``width=0`` would clamp its channels to 1 and train on; a dropout rate of 1
would zero every feature. :func:`check_arguments` refuses such values by name, for the
config's ``model`` section (:func:`fcnjax.config.validate`) and for Python users alike.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from fcnjax.layers import UPSAMPLE_METHODS
from fcnjax.models import encoders, fcn, resnet

__all__ = ["CHOICE_FIELDS", "RULES", "check_arguments"]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _positive_ints(v: Any) -> bool:
    return isinstance(v, tuple | list) and bool(v) and all(_is_int(x) and x > 0 for x in v)


# The model section's arguments whose values would build no network, or one that learns
# nothing, whichever model takes them (a model clamps channels to 1 and would train on):
# `model.<field>` -> (check, what it must be). num_classes may also be None (the data's).
RULES = {
    "num_classes": (lambda v: v is None or (_is_int(v) and v > 0), "a positive int or None"),
    "width": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "widths": (_positive_ints, "a non-empty tuple of positive ints"),
    "filters": (_positive_ints, "a non-empty tuple of positive ints"),
    "cat_channels": (lambda v: v is None or (_is_int(v) and v > 0), "a positive int or None"),
    "features": (lambda v: _positive_ints(v) and len(v) == 2, "two positive ints"),
    "latent_dim": (lambda v: _is_int(v) and v > 0, "a positive int"),
    "channels": (lambda v: _is_int(v) and v > 0, "a positive int"),
    "kernel_size": (lambda v: _is_int(v) and v > 0, "a positive int"),
    "dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a rate in [0, 1)"),
    "fc_dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a rate in [0, 1)"),
    "aspp_dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a rate in [0, 1)"),
    # 1 would keep BatchNorm's initial statistics for evaluation forever.
    "bn_momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "output_stride": (lambda v: _is_int(v) and v in (8, 16, 32), "8, 16 or 32"),
    "stages": (lambda v: _is_int(v) and 1 <= v <= 4, "1, 2, 3 or 4"),
    "blocks": (lambda v: _is_int(v) and 1 <= v <= 5, "1 ... 5"),
}
# Fields taking one of a model's choices (variant, backbone, ...): see _choices.
CHOICE_FIELDS = (
    "depth",
    "variant",
    "skip",
    "backbone",
    "backbone_style",
    "style",
    "upsample",
    "final_upsample",
    "pool_padding",
)


def _choices() -> dict[str, tuple[Any, ...]]:
    """The values each named-choice field takes, from the modules that define them."""
    return {
        "depth": tuple(resnet.DEPTHS),
        "variant": fcn.VARIANTS,
        "skip": fcn.SKIPS,
        "backbone": encoders.ENCODERS,
        "backbone_style": resnet.STYLES,
        "style": resnet.STYLES,
        "upsample": UPSAMPLE_METHODS,
        "final_upsample": UPSAMPLE_METHODS,
        "pool_padding": ("SAME", "VALID"),
    }


def check_arguments(arguments: Mapping[str, Any], prefix: str = "") -> None:
    """Raises ValueError naming the first argument (as ``prefix`` + name) whose value builds
    no network (:data:`RULES`) or is not one of the model's choices; arguments no rule
    names pass (which model takes which is the registry's check, at build).

    >>> check_arguments({"width": 0.5, "dropout": 0.5, "backbone": "vgg16"})
    >>> check_arguments({"width": 0}, prefix="model.")
    Traceback (most recent call last):
    ...
    ValueError: `model.width` must be a positive number; got 0.
    """
    choices = _choices()
    for key, value in arguments.items():
        if key in RULES:
            ok, what = RULES[key]
            if not ok(value):
                raise ValueError(f"`{prefix}{key}` must be {what}; got {value!r}.")
        elif key in CHOICE_FIELDS and value not in choices[key]:
            raise ValueError(f"`{prefix}{key}` must be one of {choices[key]}; got {value!r}.")
