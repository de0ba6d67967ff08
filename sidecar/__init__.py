"""election-sidecar: leader election with fencing grants and kill-before-successor."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("election-sidecar")  # the one place it is kept: pyproject.toml
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
