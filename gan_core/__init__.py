"""gan_core: what SAN-SRGAN and SAN-SPADE share (critic normalizations, losses, metrics, IO, runtime)."""

__version__ = "0.1.0"
