import numpy as np
import pytest

from training.calibrate import pick_threshold


@pytest.fixture
def errors():
    return np.random.default_rng(0).exponential(1.0, 50_000)


def test_quantile_hits_the_target_rate(errors):
    threshold, record = pick_threshold(errors, "quantile", 0.01)
    assert record["observed_exceedance"] == pytest.approx(0.01, rel=0.05)
    assert threshold == pytest.approx(np.log(100), rel=0.05)


def test_pot_extrapolates_beyond_the_data(errors):
    # exponential tail: true 1e-6 quantile is ln(1e6) = 13.8, beyond the 50k samples' reach
    threshold, record = pick_threshold(errors, "pot", 1e-6)
    assert record["method"] == "pot"
    assert threshold == pytest.approx(np.log(1e6), rel=0.15)
    assert threshold > errors.max()


def test_pot_falls_back_to_quantile_on_few_windows():
    small = np.random.default_rng(0).exponential(1.0, 200)
    threshold, record = pick_threshold(small, "pot", 1e-4)
    assert record["method"] == "quantile" and "fallback" in record["params"]
    assert threshold == pytest.approx(np.quantile(small, 1 - 1e-4))


def test_mean_std_uses_gaussian_tail():
    normal = np.random.default_rng(0).normal(10, 2, 100_000)
    threshold, record = pick_threshold(normal, "mean_std", 0.0013499)
    assert record["params"]["k"] == pytest.approx(3.0, abs=0.01)
    assert threshold == pytest.approx(16.0, rel=0.01)


def test_record_for_bundle(errors):
    _, record = pick_threshold(errors, "quantile", 0.001, windows_per_day=86400)
    assert record["expected_false_alarms_per_day"] == pytest.approx(86.4)
    assert len(record["errors_sample"]) == 2000
    assert set(record["error_quantiles"]) >= {"0.5", "0.99", "max"}


@pytest.mark.parametrize(
    "kwargs, message",
    [({"method": "magic"}, "method"), ({"false_alarm_rate": 1.5}, r"\(0, 1\)"), ({"false_alarm_rate": 0}, "rate")],
)
def test_bad_arguments(errors, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pick_threshold(errors, **kwargs)


def test_too_few_windows():
    with pytest.raises(ValueError, match="at least 10"):
        pick_threshold(np.ones(5), "quantile", 0.01)
