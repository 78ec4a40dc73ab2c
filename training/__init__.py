"""sensorguard offline pipeline (installed as ``sensorguard.training``): data loading, Lightning
training, calibration, evaluation, reports."""
