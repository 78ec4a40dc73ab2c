"""sensorguard offline pipeline: data loading, Lightning training, calibration, evaluation, reports."""
