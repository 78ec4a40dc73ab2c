"""The linear path's rank: the structure shared by channels, not every channel's own noise."""

import numpy as np
import pytest

from sensorguard.training.data import SensorData
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
    assert pca_start(_rows(3, 2, 0.3), rank=0).rank == 0


def test_channels_constant_in_training_do_not_let_the_path_copy_the_live_ones():
    """A constant channel standardizes to 0: counted, it let the path copy every live channel
    (one live channel beside one constant one got rank 1, so a shift on it never showed)."""
    live = _rows(8, 1, 1.0)[:, :4]
    assert pca_start(np.c_[live, np.zeros((len(live), 4))]).rank < 4
    assert pca_start(np.c_[live[:, :1], np.zeros((len(live), 1))]).rank == 0
    assert pca_start(np.c_[live, np.zeros((len(live), 4))], rank=7).rank == 3
    with pytest.raises(ValueError, match="rank must be >= 0"):
        pca_start(live, rank=-1)


def test_flags_under_their_scale_floor_do_not_let_the_path_copy_the_process_channels():
    """Two 0/1 flags (on in 1 % of rows; the resolution floor sets their scale to 1, so they carry
    a hundredth of a unit's variance) beside two process channels lowered the mean eigenvalue:
    rank 2, a copy of both, and a 5-sigma shift on one left the error where it was (review)."""
    from sensorguard.training.linear import pca_error
    from sensorguard.training.scaling import fit_scaler

    rng = np.random.default_rng(0)
    rows = 600
    flags = (rng.random((rows, 2)) < 0.01).astype(float)
    raw = np.c_[rng.normal(50, 2, rows), rng.normal(10, 1, rows), flags]
    fit = fit_scaler(raw)
    z = (raw - fit.center_) / fit.scale_
    start = pca_start(z)
    assert start.rank == 1
    shifted = z.copy()
    shifted[:, 0] += 5 * z[:, 0].std()
    assert pca_error(start, shifted[None].transpose(0, 2, 1)) > 10 * pca_error(start, z[None].transpose(0, 2, 1))


def test_a_given_rank_is_capped_by_the_channels_that_move_not_the_variance_cut():
    """A fold takes the served model's rank: a flag just under the cut in one fold capped it
    lower there, and the line came from models unlike the one served (found by review)."""
    rng = np.random.default_rng(1)
    process = rng.standard_normal(400)
    flag = np.r_[np.ones(12), np.zeros(388)] * 2.0  # standardized variance about 0.12 here, 0.0 in a fold without it
    rows = np.c_[process, flag]
    assert pca_start(rows).rank == 1
    assert pca_start(np.c_[process, np.r_[np.ones(3), np.zeros(397)] * 0.5], rank=1).rank == 1


def _data(rows: np.ndarray) -> SensorData:
    return SensorData(rows, 1.7e9 + np.arange(len(rows), dtype=float), np.zeros(len(rows), int),
                      tuple(f"c{i}" for i in range(rows.shape[1])), 1.0)


def test_a_warm_start_that_no_longer_fits_is_named_in_the_summary():
    """Retraining on data whose linear rank changed starts from PCA: the summary says so."""
    from sensorguard.training.train import TrainOptions, train_bundle

    options = TrainOptions(max_epochs=1, window=16, progress=False)
    current, _ = train_bundle(_data(_rows(2, 3, 0.2, rows=900)), options)
    assert current.config.linear == 2
    same, same_summary = train_bundle(_data(_rows(2, 3, 0.2, rows=900, seed=1)), options, current.state_dict)
    moved, moved_summary = train_bundle(_data(_rows(3, 2, 0.2, rows=900)), options, current.state_dict)
    assert same.config.linear == 2 and moved.config.linear == 3
    assert not any("warm start not used" in line for line in same_summary.lines())
    assert any("warm start not used" in line and "rank 2 -> 3" in line for line in moved_summary.lines())


def test_cross_fitted_folds_calibrate_the_served_rank():
    """A fold that chose its own rank calibrated another model (on 400 simulated rows two folds of
    five kept 3 components where the served model kept 2, and their lower errors set the line)."""
    from dataclasses import replace

    from sensorguard.service.model import ModelConfig
    from sensorguard.training.crossfit import out_of_fold_errors
    from sensorguard.training.train import TrainOptions, train_bundle

    data = _data(_rows(3, 2, 0.3, rows=900))
    options = TrainOptions(max_epochs=1, progress=False)
    served, _ = train_bundle(data, options)
    assert served.config.linear == 3
    medians = {}
    for rank in (1, 3):
        template = replace(served, config=ModelConfig(**{**served.config.to_dict(), "linear": rank}))
        medians[rank] = float(np.nanmedian(np.concatenate(out_of_fold_errors(data, template, options, epochs=0))))
    assert medians[1] > 2 * medians[3], medians  # one component copies less than three
