"""Only a workaround; the project is configured in pyproject.toml.

setuptools' editable install (`pip install -e .`) installs data files only when the
distribution answers has_data(), a method it does not define, so the Jupyter config that
enables widgets.server would be skipped. Answering it makes `-e .` install them as a wheel does.
"""

import setuptools.dist
from setuptools import setup

if not hasattr(setuptools.dist.Distribution, "has_data"):
    setuptools.dist.Distribution.has_data = lambda self: bool(self.data_files)

setup()
