"""sensorguard runtime (installed as ``sensorguard.service``): the network, bundle, scorer and daemon.

Never imports Lightning, pandas or matplotlib at import time; the version lives in ``sensorguard``.
"""
