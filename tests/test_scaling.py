"""The scaler floor: real channels (quantized, idle, constant, huge or tiny) never blow up to thousands of units."""

import numpy as np
import pytest

from sensorguard.training.scaling import FULL_SCALE, REL_LEVEL, SPIKE_SHARE, fit_scaler, spike_share, spiky_scale

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _fresh_rng():
    """Each test draws from a generator of its own: a test's columns depended on the tests run before
    it, and one check passed or failed by the order (an audit)."""
    global RNG
    RNG = np.random.default_rng(0)
N = 400


def _column(kind: str) -> np.ndarray:
    if kind == "gaussian":
        return 50 + 2 * RNG.standard_normal(N)
    if kind == "quantized_flow":  # reads 32.0 in most rows, a step of 1.0 now and then
        return np.where(RNG.random(N) < 0.9, 32.0, 33.0)
    if kind == "idle_vibration":  # RMS moving in its 4th decimal while the machine idles
        return 0.2 + 1e-4 * RNG.standard_normal(N)
    if kind == "constant":
        return np.full(N, 7.5)
    if kind == "constant_zero":
        return np.zeros(N)
    if kind == "huge":
        return 1e9 + 1e7 * RNG.standard_normal(N)
    if kind == "rare_spikes":  # near constant with a few spikes: the spikes were normal in training
        x = np.full(N, 3.0) + 1e-6 * RNG.standard_normal(N)
        x[::100] = 10.0
        return x
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, set_by, scale_between",
    [
        ("gaussian", "spread", (1.7, 2.3)),
        ("quantized_flow", "resolution", (1.0, 1.0)),  # one quantization step is one unit
        ("idle_vibration", "level", (REL_LEVEL * 0.2, REL_LEVEL * 0.2)),  # 0.1 % of reading
        ("constant", "constant", (7.5, 7.5)),
        ("constant_zero", "constant", (1.0, 1.0)),
        ("huge", "spread", (0.8e7, 1.2e7)),
        ("rare_spikes", "spread", (0.6, 0.8)),  # std of the spikes, not 1e-6
    ],
)
def test_scale_per_channel_kind(kind, set_by, scale_between):
    fit = fit_scaler(_column(kind)[:, None])
    lo, hi = scale_between
    assert fit.reason == (set_by,)
    assert lo * 0.999 <= fit.scale_[0] <= hi * 1.001, fit.scale_[0]


@pytest.mark.parametrize(
    "kind, spiky",
    [("gaussian", False), ("quantized_flow", False), ("idle_vibration", False), ("constant", False),
     ("constant_zero", False), ("huge", False), ("rare_spikes", True), ("trend", False), ("late_step", False),
     ("spikes_on_a_level", True)],
)
def test_only_a_channel_whose_spread_a_few_rows_carry_is_spiky(kind, spiky):
    """Spiky: the farthest 1 % of rows carry over half the squared spread (a Gaussian's carry
    about 9 %). A trend or a step that lasts a fifth of the rows is spread by many rows, not few."""
    if kind == "trend":
        column = np.linspace(0.0, 10.0, N) + RNG.standard_normal(N)
    elif kind == "late_step":
        column = np.r_[np.zeros(N - N // 5), np.ones(N // 5)] + 0.01 * RNG.standard_normal(N)
    elif kind == "spikes_on_a_level":  # its level floor (0.1 % of 1,000) is over its spread: the pinned scale
        column = np.full(N, 1000.0) + 1e-6 * RNG.standard_normal(N)  # is the fit's, floors and all, not
        column[::100] = 1000.5  # its standard deviation (an audit)
    else:
        column = _column(kind)
    values = column[:, None]
    assert (spike_share(values)[0] > SPIKE_SHARE) == spiky, spike_share(values)
    scale = spiky_scale(values)[0]
    assert (scale == fit_scaler(values).scale_[0]) if spiky else np.isnan(scale)


def test_one_odd_reading_does_not_halve_a_quantized_channels_step():
    """The step is the median gap between distinct values: one reading of 32.5 on a channel quantized
    in whole units (a glitch, an interpolated export row) must not make it 0.5, so that one step
    scores two units (an audit: the minimum gap passed every test)."""
    rng = np.random.default_rng(3)
    column = np.where(rng.random(N) < 0.9, 32.0, rng.integers(28, 37, N).astype(float))
    column[17] = 32.5
    fit = fit_scaler(column[:, None])
    assert fit.reason == ("resolution",) and fit.scale_[0] == pytest.approx(1.0)


def test_a_pinned_scale_replaces_only_its_channels():
    values = np.c_[_column("gaussian"), _column("rare_spikes")]
    fit = fit_scaler(values).pinned(np.array([np.nan, 5.0]))
    assert fit.scale_[1] == 5.0 and fit.scale_[0] == fit_scaler(values).scale_[0]
    assert fit.reason == ("spread", "spikes")
    unchanged = fit_scaler(values)
    assert unchanged.pinned(None) is unchanged and unchanged.pinned(np.full(2, np.nan)) is unchanged
    # a counter with no spike in these rows (a fold's) was also named "constant in training"
    still = fit_scaler(np.c_[_column("gaussian"), np.zeros(len(_column("gaussian")))]).pinned(np.array([np.nan, 5.0]))
    assert still.constant == () and still.reason == ("spread", "spikes") and still.scale_[1] == 5.0


def test_a_normal_step_after_training_stays_a_few_units():
    """The failure this floor prevents: an idle channel's later normal step read as thousands of units."""
    kinds = ["quantized_flow", "idle_vibration", "constant", "gaussian"]
    values = np.column_stack([_column(k) for k in kinds])
    fit = fit_scaler(values)
    later = values[-1] + np.array([1.0, 0.0005, 0.0, 2.0])  # one flow step, a small vibration rise, a 1-sd move
    units = np.abs((later - fit.center_) / fit.scale_)
    assert units.max() < 5, units


def test_record_names_constant_channels_and_rules():
    values = np.column_stack([_column("gaussian"), _column("constant"), _column("quantized_flow")])
    record = fit_scaler(values).record(("temp", "setpoint", "flow"))
    assert record["constant_in_training"] == ["setpoint"]
    assert record["set_by"] == ["spread", "constant", "resolution"]
    assert len(record["floor"]) == len(record["spread"]) == 3
    assert f"{FULL_SCALE:g} x largest |value|" in record["rule"]


def test_a_channel_in_small_units_keeps_its_spread():
    """A displacement of about 1e-6 m moving by 1e-7: an absolute floor of 1e-6 set its scale ten
    times its spread, and a 5-sigma shift was caught in 18 % of its rows (a walk). One part per
    million of its largest value floors it instead, below any spread a sensor shows."""
    tiny = 2e-6 + 1e-7 * RNG.standard_normal(N)
    fit = fit_scaler(np.column_stack([tiny, _column("gaussian")]))
    assert fit.reason[0] == "spread"
    assert fit.scale_[0] == pytest.approx(np.std(tiny), rel=0.1)
    at_zero = np.r_[np.zeros(N - 4), 1e-3, -1e-3, 2e-3, 0.0]  # sits at zero: floored, never a zero scale
    floored = fit_scaler(at_zero[:, None])  # (by its resolution, its step: "> 0" held for any spread; an audit)
    assert floored.reason == ("resolution",) and floored.scale_[0] == pytest.approx(1e-3)


def test_median_center_and_positive_finite_scales():
    values = np.column_stack([np.r_[np.zeros(99), 1e6], np.full(100, 5.0), np.arange(100.0)])
    fit = fit_scaler(values)
    assert fit.center_.tolist() == [0.0, 5.0, 49.5]
    assert np.isfinite(fit.scale_).all() and (fit.scale_ > 0).all()
    assert fit.scale_[2] == pytest.approx(49.5 / 1.349, rel=0.01)  # IQR/1.349 > std for a uniform ramp


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        fit_scaler(np.empty((0, 3)))


def test_huge_values_get_a_finite_scale():
    """Values near 1e200 overflowed the standard deviation to inf, and the channel read 0 forever
    (found by review)."""
    values = np.c_[np.linspace(1e200, 3e200, 100), np.linspace(0.0, 1.0, 100)]
    fit = fit_scaler(values)
    assert np.isfinite(fit.scale_).all() and fit.scale_[0] == pytest.approx(2e200 / 1.349 * 0.5, rel=0.05)
