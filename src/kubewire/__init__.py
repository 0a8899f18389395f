"""kubewire: Kubernetes networking, real, on one Linux machine."""

__version__ = "0.1.0"
