"""Compiled twins of the hot path (the rest of the build is pyproject.toml).

All are optional: where they do not build, the pure-Python modules they mirror
(shared/codec_py.py, router/dataplane/getrun_py.py, storage_node/cores/adaptive.py) serve instead,
under the same tests.
"""

from setuptools import Extension, setup

OPTIMIZE = ["-O2", "-fno-strict-aliasing"]

setup(ext_modules=[
    Extension("shared._codec", ["shared/_codec.c"], depends=["shared/_codec.h"],
              extra_compile_args=OPTIMIZE, optional=True),
    Extension("router.dataplane._getrun", ["router/dataplane/_getrun.c"], depends=["shared/_codec.h"],
              include_dirs=["shared"], extra_compile_args=OPTIMIZE, optional=True),
    Extension("storage_node.cores._adaptive", ["storage_node/cores/_adaptive.c"],
              extra_compile_args=OPTIMIZE, optional=True),
])
