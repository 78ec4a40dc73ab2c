"""sensorguard runtime: the network, bundle, scorer and daemon. Never imports Lightning."""

__version__ = "0.1.0"
