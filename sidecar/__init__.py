"""election-sidecar: leader election with fencing grants and kill-before-successor."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # The version is read from package metadata (kept in pyproject.toml only)
    # when first asked for: importlib.metadata costs tens of milliseconds at
    # import, which every orchestrator importing the client library would pay.
    if name != "__version__":
        raise AttributeError(name)
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("election-sidecar")
    except PackageNotFoundError:  # run from a source tree that was never installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
