"""farm: prune, quantize and benchmark sparse CNNs on GPUs, one job or a whole farm at a time."""

__version__ = "0.1.0"
