"""The class-conditional U-Net (ddmini.unet): shapes at every configuration, preset sizes, bad configs."""
from dataclasses import replace

import pytest
import torch

from ddmini import unet
from ddmini.config import UNET_PRESETS, UNetConfig


@pytest.mark.parametrize("cfg", [
    UNET_PRESETS["tiny"],
    UNetConfig(base_channels=8, channel_mult=(1, 2, 2), groups=4, attention=True, image_size=28),
    UNetConfig(base_channels=8, channel_mult=(1,), groups=4, in_channels=3, image_size=10),
    UNetConfig(base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=2, groups=4, image_size=32, dropout=0.1),
])
def test_unet_shapes(cfg):
    m = unet.UNet(cfg)
    x = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size)
    out = m(x, torch.tensor([0, 5, 999]), torch.tensor([0, 1, cfg.num_classes]))
    assert out.shape == x.shape


def test_presets_sizes():
    assert 400_000 <= unet.num_parameters(unet.build("small")) <= 1_000_000
    assert unet.num_parameters(unet.build("paper")) > 5_000_000


@pytest.mark.parametrize("bad", [dict(image_size=29), dict(channel_mult=()), dict(dropout=1.0), dict(base_channels=0)])
def test_unet_config_errors(bad):
    with pytest.raises(ValueError):
        unet.UNet(replace(UNET_PRESETS["tiny"], **bad))


def test_prediction_depends_on_time_and_label():
    torch.manual_seed(0)
    m = unet.build("tiny").eval()
    with torch.no_grad():  # the output layer starts at zero
        for w in m.parameters():
            w.add_(0.05 * torch.randn_like(w))
        x = torch.randn(2, 1, 28, 28)
        a = m(x, torch.tensor([10, 10]), torch.tensor([3, 3]))
        b = m(x, torch.tensor([500, 500]), torch.tensor([3, 3]))
        c = m(x, torch.tensor([10, 10]), torch.tensor([7, 7]))
    assert (a - b).abs().max() > 1e-4 and (a - c).abs().max() > 1e-4
