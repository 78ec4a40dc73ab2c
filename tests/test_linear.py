"""The linear path's rank: the structure shared by channels, not every channel's own noise."""

import numpy as np
import pytest

from sensorguard.training.linear import pca_start


def _rows(sources: int, per_source: int, noise: float, rows: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((rows, sources))
    return np.repeat(base, per_source, axis=1) + noise * rng.standard_normal((rows, sources * per_source))


@pytest.mark.parametrize(
    ("sources", "per_source", "noise", "rank"),
    [
        # two sources behind 8 channels at half their spread in noise: 85 % of the variance is
        # shared, so "components for 90 % of the variance" took 4 and copied two noise directions
        (2, 4, 0.5, 2),
        (1, 8, 0.1, 1),  # one source: one component
        (3, 2, 0.3, 3),
        (8, 1, 1.0, None),  # independent channels: at least one, fewer than eight
    ],
)
def test_rank_keeps_components_above_the_mean_eigenvalue(sources, per_source, noise, rank):
    start = pca_start(_rows(sources, per_source, noise))
    channels = sources * per_source
    if rank is None:
        assert 1 <= start.rank < channels
    else:
        assert start.rank == rank
    assert start.components.shape == (start.rank, channels)
    assert np.allclose(start.components @ start.components.T, np.eye(start.rank), atol=1e-9)
    assert 0 < start.explained < 1


def test_one_channel_or_constant_rows_have_no_linear_path():
    assert pca_start(_rows(1, 1, 0.1)).rank == 0
    assert pca_start(np.full((50, 4), 3.0)).rank == 0


def test_cross_fitted_folds_calibrate_the_served_rank():
    """A fold that chose its own rank calibrated another model (on 400 simulated rows two folds of
    five kept 3 components where the served model kept 2, and their lower errors set the line)."""
    from dataclasses import replace

    from sensorguard.service.model import ModelConfig
    from sensorguard.training.crossfit import out_of_fold_errors
    from sensorguard.training.data import SensorData
    from sensorguard.training.train import TrainOptions, train_bundle

    rows = _rows(3, 2, 0.3, rows=900)
    data = SensorData(rows, 1.7e9 + np.arange(len(rows), dtype=float), np.zeros(len(rows), int),
                      tuple(f"c{i}" for i in range(rows.shape[1])), 1.0)
    options = TrainOptions(max_epochs=1, progress=False)
    served, _ = train_bundle(data, options)
    assert served.config.linear == 3
    medians = {}
    for rank in (1, 3):
        template = replace(served, config=ModelConfig(**{**served.config.to_dict(), "linear": rank}))
        medians[rank] = float(np.nanmedian(np.concatenate(out_of_fold_errors(data, template, options, epochs=0))))
    assert medians[1] > 2 * medians[3], medians  # one component copies less than three
