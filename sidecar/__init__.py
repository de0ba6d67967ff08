"""election-sidecar: leader election with fencing grants and kill-before-successor."""

__version__ = "0.1.0"
