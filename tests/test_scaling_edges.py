"""Edges of the floored scaler and the spike rule that the main scaling tests leave open (a mutation audit):
the constant channel's unit for negative readings, the floors recorded in bundle.json, and the spike share
itself, with values worked out by hand from the documented rules."""

import numpy as np
import pytest

from sensorguard.training.linear import PcaStart, naive_error, pca_error, pca_start
from sensorguard.training.scaling import fit_scaler, spike_share, spiky_scale


def _few_far_rows(rows: int) -> np.ndarray:
    """Zeros but for one row at 2 and four rows at 1: median 0, squared deviation 4 + 4 * 1 = 8."""
    column = np.zeros(rows)
    column[3] = 2.0
    column[[10, 11, 12, 13]] = 1.0
    return column[:, None]


def test_a_negative_constant_channel_is_measured_in_its_magnitude():
    """Constant in training: one unit is max(|value|, 1), so -7.5 is measured in 7.5s (not in 1s, as
    max(value, 1) would give) and a constant -0.2 in 1s."""
    fit = fit_scaler(np.c_[np.full(50, -7.5), np.full(50, -0.2)])
    assert fit.reason == ("constant", "constant") and fit.constant == (0, 1)
    assert fit.center_.tolist() == [-7.5, -0.2]
    assert fit.scale_.tolist() == [7.5, 1.0]


def test_the_recorded_floor_is_the_floor_not_the_scale():
    """bundle.json keeps each channel's floor beside its spread, so a user sees how far above the floor
    the scale sits: a ramp 0..99 has spread IQR/1.349 = 49.5/1.349 and floor its step, 1; a constant
    7.5 has spread 0 and floor 7.5."""
    values = np.c_[np.arange(100.0), np.full(100, 7.5)]
    record = fit_scaler(values).record(("ramp", "setpoint"))
    assert record["set_by"] == ["spread", "constant"]
    assert record["spread"][0] == pytest.approx(49.5 / 1.349, rel=1e-5) and record["spread"][1] == 0.0
    assert record["floor"] == [1.0, 7.5]


def test_the_full_scale_floor_is_one_part_per_million_of_the_largest_value():
    """A channel that sits at zero in most rows (level floor 0) and reads about 1e6 in steps of 1e-4
    otherwise (its resolution 1e-4): the floor is one part per million of its largest |value|, 1.0."""
    column = np.zeros(1000)
    column[:400] = 1e6 + np.arange(400) * 1e-4
    fit = fit_scaler(column[:, None])
    assert fit.floor[0] == pytest.approx(1e-6 * column.max(), rel=1e-9)
    assert fit.reason == ("spread",)  # (its spread, about 0.49e6, is far above it)


def test_spike_share_is_the_share_of_the_farthest_one_percent_of_rows():
    """200 rows: the farthest 1 % are 2 rows (the one at 2 and one at 1): (4 + 1) / 8. Deviations are
    from the median (0 here), not the mean."""
    assert spike_share(_few_far_rows(200))[0] == pytest.approx(5 / 8, abs=1e-12)


def test_spike_share_counts_at_least_one_row_on_short_data():
    """30 rows: 1 % is 0.3 rows, rounded to 0: the farthest row still counts, 4 / 8 (taking no row
    would slice all of them and read every short channel as spiky)."""
    assert spike_share(_few_far_rows(30))[0] == pytest.approx(4 / 8, abs=1e-12)


def test_a_constant_channel_has_spike_share_zero():
    """Documented: 0 for a constant channel (no squared spread to share), not NaN."""
    assert spike_share(np.c_[np.full(50, 7.5), np.zeros(50)]).tolist() == [0.0, 0.0]


def test_spiky_means_more_than_half_not_exactly_half():
    """100 rows: the farthest row carries exactly 4 / 8 = SPIKE_SHARE, which is not *more* than half:
    not spiky (NaN). 200 rows: 5 / 8 is, and the channel takes the fit's own scale."""
    assert spike_share(_few_far_rows(100))[0] == 0.5
    assert np.isnan(spiky_scale(_few_far_rows(100))).all()
    at_200 = _few_far_rows(200)
    assert spiky_scale(at_200)[0] == fit_scaler(at_200).scale_[0]


# --- the linear path over the standardized rows (training/linear.py) ----------------------------------------


def _orthogonal(powers: list[float]) -> np.ndarray:
    """Zero-mean, exactly orthogonal columns (Hadamard rows, 8 x) whose squared norms are ``powers``:
    their principal components are the channels themselves and their eigenvalues ``powers``."""
    h = np.array([[1.0]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    return h[:, 1 : 1 + len(powers)] * np.sqrt(np.array(powers) / 8.0)


def test_the_kaiser_cut_is_the_mean_over_live_channels_only():
    """Powers 36, 9, 4, 1 beside four constant channels: the live mean is 50 / 4 = 12.5, so one
    component (36) is kept and explains 36 / 50; averaged over all eight channels (6.25) the path
    would keep two and copy the second channel."""
    live = _orthogonal([36.0, 9.0, 4.0, 1.0])
    for rows in (live, np.c_[live, np.zeros((8, 4))]):
        start = pca_start(rows)
        assert start.rank == 1
        assert start.explained == pytest.approx(36 / 50, abs=1e-12)
        np.testing.assert_allclose(start.components[0], np.eye(rows.shape[1])[0], atol=1e-12)


def test_the_mean_is_the_column_mean():
    """The PCA start's mean is each channel's mean (1 for 0, 0, 0, 4), not its median (0)."""
    rows = np.c_[[0.0, 0.0, 0.0, 4.0], [1.0, 2.0, 3.0, 4.0]]
    np.testing.assert_allclose(pca_start(rows).mean, [1.0, 2.5])


def test_each_component_has_its_largest_loading_positive():
    """A fixed sign per component (largest |loading| positive), so x and -x give the same weights
    whatever sign the SVD routine returns."""
    rng = np.random.default_rng(0)
    source = rng.standard_normal((200, 1))
    rows = np.c_[source, 0.5 * source, -0.2 * source] + 0.1 * rng.standard_normal((200, 3))
    for data in (rows, -rows):
        comps = pca_start(data, rank=2).components
        assert comps.shape == (2, 3)
        assert (comps[np.arange(2), np.abs(comps).argmax(axis=1)] > 0).all(), comps
    np.testing.assert_allclose(pca_start(rows, rank=2).components, pca_start(-rows, rank=2).components, atol=1e-9)


def test_a_channel_just_under_the_live_variance_does_not_count():
    """A 0/1 flag on in 10 % of rows has standardized variance 0.09, under LIVE_VARIANCE (0.1): two
    live process channels, rank 1. Scaled by 1.1 (variance 0.1089) it counts: three live, rank 2."""
    rng = np.random.default_rng(2)
    process = rng.standard_normal((400, 2))
    flag = np.r_[np.ones(40), np.zeros(360)]
    assert flag.var() == pytest.approx(0.09)
    assert pca_start(np.c_[process, flag]).rank == 1
    assert pca_start(np.c_[process, 1.1 * flag]).rank == 2


def test_pca_error_measures_from_the_start_mean():
    """Start: the first channel, mean (5, 5). A window (6, 4 | 7, 7) is (1, -1 | 2, 2) from the mean; the
    first channel is rebuilt, the second's 2s are not: mean squared error (0 + 0 + 4 + 4) / 4 = 2."""
    start = PcaStart(np.array([[1.0, 0.0]]), np.array([5.0, 5.0]), 0.5)
    windows = np.array([[[6.0, 4.0], [7.0, 7.0]]])
    assert pca_error(start, windows) == pytest.approx(2.0)


def test_naive_error_rebuilds_each_channel_of_a_window_as_its_own_mean():
    """(0, 2, 0, 2) rebuilt as 1 misses by 1 in each sample, a constant 5 by nothing: 4 / 8 = 0.5."""
    windows = np.array([[[0.0, 2.0, 0.0, 2.0], [5.0, 5.0, 5.0, 5.0]]])
    assert naive_error(windows) == pytest.approx(0.5)


def test_isotropic_channels_still_keep_one_component():
    """Four channels of equal variance and no correlation: no eigenvalue is above the mean (up to
    rounding), and the rule keeps at least one and fewer than four."""
    start = pca_start(_orthogonal([2.0, 2.0, 2.0, 2.0]))
    assert 1 <= start.rank < 4
