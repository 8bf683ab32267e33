"""Label conventions shared by the data, the losses, the metrics and the pictures.

A leaf module (it imports nothing from fcnjax), so that every layer can use it.
"""

IGNORE_LABEL = 255
"""The one label for void, borders, crowds and padding: every loss and metric skips it."""

__all__ = ["IGNORE_LABEL"]
