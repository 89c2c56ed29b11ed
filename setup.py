"""Package discovery that pyproject.toml cannot express on its own.

Everything else lives in pyproject.toml. ``[tool.setuptools.packages.find]`` finds packages only
under their own names, but the Alembic environment sits at the top level (``migrations/``) and
ships as ``zsindex.migrations`` (``package-dir`` maps it), so both trees are discovered here and
no package is ever listed by hand. tests/deploy/test_wheel_contents.py checks the built wheel
against the source tree.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["zsindex", "zsindex.*"]),
        *(f"zsindex.{name}" for name in find_packages(include=["migrations", "migrations.*"])),
    ],
)
