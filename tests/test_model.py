import pytest
import torch

from sensorguard.service.model import ConvAutoencoder, ModelConfig, default_depth, default_latent, flops_per_window


@pytest.mark.parametrize("window", [8, 16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3, 8])
def test_output_shape_matches_input(window, channels):
    config = ModelConfig(channels=channels, window=window, latent=4, depth=default_depth(window))
    net = ConvAutoencoder(config)
    assert net(torch.randn(2, channels, window)).shape == (2, channels, window)


def test_bottleneck_is_narrower_than_window():
    for channels, window in [(1, 32), (8, 32), (8, 64), (40, 64)]:
        assert default_latent(channels, window) < channels * window


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 0, "window": 16}, "channels"),
        ({"channels": 2, "window": 18, "depth": 2}, "divisible"),
        ({"channels": 2, "window": 16, "latent": -1}, "latent"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_flops_counted_per_layer():
    config = ModelConfig(channels=2, window=8, latent=3, hidden=4, depth=1)
    # conv 2->4 over 4 outputs, linear 16->3, 3->16, deconv 4->2 over 4 inputs
    expected = 2 * 4 * 4 * 2 * 4 + 2 * 16 * 3 + 2 * 3 * 16 + 2 * 4 * 2 * 4 * 4
    assert flops_per_window(config) == expected
    # the linear path runs folded: one 2 x 2 matmul for each of the 8 samples, whatever its rank
    assert flops_per_window(ModelConfig(channels=2, window=8, latent=3, hidden=4, depth=1, linear=1)) == (
        expected + 2 * 8 * 2 * 2)


def test_deterministic_for_a_seed():
    config = ModelConfig(channels=3, window=16, latent=4)
    torch.manual_seed(1)
    a = ConvAutoencoder(config).state_dict()
    torch.manual_seed(1)
    b = ConvAutoencoder(config).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
