"""Models: the VMamba v2 backbone and the ZeroMamba head."""
