"""Package discovery that pyproject.toml cannot express on its own.

Everything else lives in pyproject.toml. ``[tool.setuptools.packages.find]`` finds packages only
under their own names, but the Alembic environment sits at the top level (``migrations/``) and
ships as ``zsindex.migrations`` (``package-dir`` maps it), so both trees are discovered here and
no package is ever listed by hand. tests/deploy/test_wheel_contents.py checks the built wheel
against the source tree.
"""

from setuptools import Extension, find_packages, setup

# The exact fp16 scan kernel (zsindex/index/_f16scan.c). Optional: where no C compiler is present
# the install still succeeds and the index keeps its numpy path (an fp32 copy of fp16 sets).
# -g0 keeps the build path out of the binary, so the sdist's wheel equals the tree's wheel.
F16SCAN = Extension(
    "zsindex.index._f16scan",
    sources=["zsindex/index/_f16scan.c"],
    extra_compile_args=["-O3", "-g0", "-std=c11"],
    optional=True,
)

setup(
    packages=[
        *find_packages(include=["zsindex", "zsindex.*"]),
        *(f"zsindex.{name}" for name in find_packages(include=["migrations", "migrations.*"])),
    ],
    ext_modules=[F16SCAN],
)
