"""The training recipes, shipped in the package so an installed wheel can run them.

Each module is a config: ``get_config(arg=None)`` returns an ``ml_collections.ConfigDict``
built on :func:`fcnjax.config.default_config`. Choose one by name or give your own file::

    fcnjax train --config shapes_fcn8s --workdir runs/shapes
    fcnjax train --config shapes_fcn8s:runlocal --workdir /tmp/smoke  # seconds
    fcnjax train --config path/to/my_config.py[:arg] --workdir runs/mine

A config of your own extends a shipped one by importing it::

    from fcnjax.configs import shapes_fcn8s

    def get_config(arg=None):
        c = shapes_fcn8s.get_config(arg)
        c.num_steps = 10
        return c

The recipes and the config sections are described in this folder's ``README.md``.
"""
