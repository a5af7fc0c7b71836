"""The class-conditional U-Net (ddmini.unet): shapes at every configuration, preset sizes, bad configs."""

from dataclasses import replace

import pytest
import torch

from ddmini import unet
from ddmini.config import UNET_PRESETS, UNetConfig


@pytest.mark.parametrize(
    "cfg",
    [
        UNET_PRESETS["tiny"],
        UNetConfig(base_channels=8, channel_mult=(1, 2, 2), groups=4, attention=True, image_size=28),
        UNetConfig(base_channels=8, channel_mult=(1,), groups=4, in_channels=3, image_size=10),
        UNetConfig(base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=2, groups=4, image_size=32, dropout=0.1),
    ],
)
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


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_fused_norm_gives_the_eager_models_loss_and_gradients(memory_format):
    """UNet.set_fused_norm swaps every GroupNorm + SiLU (with the blocks' scale-shift) for the ddmini kernel:
    the same loss and gradients to float32 rounding, for both memory formats and a 3-channel model."""
    from ddmini.diffusion import Diffusion

    cfg = UNetConfig(base_channels=8, channel_mult=(1, 2), groups=4, attention=True, in_channels=3, image_size=12)
    torch.manual_seed(0)
    m = unet.UNet(cfg).to(memory_format=memory_format)
    for p in m.parameters():  # the zero-initialised output convs would hide every gradient behind them
        if not p.abs().sum():
            torch.nn.init.normal_(p, std=0.1)
    x0, noise = torch.rand(6, 3, 12, 12) * 2 - 1, torch.randn(6, 3, 12, 12)
    t, y = torch.randint(0, 1000, (6,)), torch.tensor([0, 1, 2, 3, 10, 10])
    out = {}
    for fused in (False, True):
        m.set_fused_norm(fused)
        m.zero_grad(set_to_none=True)
        loss = Diffusion().loss(m, x0, y, t, noise)
        loss.backward()
        out[fused] = (loss.item(), [p.grad.clone() for p in m.parameters()])
    assert all(b.fused_norm for b in m.modules() if isinstance(b, unet.ResBlock))
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-5)
    for a, b in zip(out[False][1], out[True][1]):
        assert (a - b).norm() <= 1e-4 * a.norm() + 1e-7


def test_fused_norm_under_bf16_autocast_gives_the_eager_result():
    """Under CPU bf16 autocast the blocks' activations are bfloat16: the fused kernel takes them and gives the
    eager ops' output to bfloat16 rounding: no further from it than twice bf16's own distance from float32."""
    torch.manual_seed(0)
    m = unet.UNet(UNET_PRESETS["tiny"])
    for p in m.parameters():
        if not p.abs().sum():
            torch.nn.init.normal_(p, std=0.1)
    x, t, y = torch.randn(4, 1, 28, 28), torch.tensor([1, 200, 500, 999]), torch.tensor([0, 1, 2, 10])
    out = {}
    for fused in (False, True):
        m.set_fused_norm(fused)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out[fused] = m(x, t, y).float()
    m.set_fused_norm(False)
    f32 = m(x, t, y)
    assert torch.isfinite(out[True]).all()
    assert (out[True] - out[False]).norm() <= 2 * (out[False] - f32).norm()


def test_the_lean_decoder_upsamples_by_pixel_shuffle_and_keeps_one_block_at_the_top():
    """UNET_PRESETS['lean'] (cpu-hour's): each level goes up by a conv at the lower resolution to 4x the next
    level's channels and a pixel shuffle, and the top has one decoder block, fed by the top encoder block's skip;
    the knobs at their defaults leave the cache keys of the models trained before them as they were."""
    from ddmini.config import key_dict

    small, lean = unet.build("small"), unet.build("lean")
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([3, 700]), torch.tensor([4, 10])
    assert lean(x, t, y).shape == x.shape
    assert [len(b) for b in lean.up] == [2, 2, 1] and [len(b) for b in small.up] == [2, 2, 2]
    conv, shuffle = lean.upsample[-1]  # 14 -> 28: 32 channels at 14x14 to 4 x 16, then 16 channels at 28x28
    assert (conv.in_channels, conv.out_channels, shuffle.upscale_factor) == (32, 64, 2)
    assert lean.up[-1][0].conv1.in_channels == 16 + 16  # the shuffled 16 and the top encoder block's 16
    assert "upsample" not in key_dict(small.cfg) and "top_blocks" not in key_dict(small.cfg)
    assert key_dict(lean.cfg)["upsample"] == "shuffle" and key_dict(lean.cfg)["top_blocks"] == 1
    assert unet.describe(lean.cfg).startswith("U-Net 'lean'") and unet.describe(small.cfg).startswith("U-Net 'small'")


def test_top_blocks_beyond_the_levels_blocks_is_one_line():
    with pytest.raises(ValueError, match="top_blocks must be at most num_res_blocks \\+ 1 = 2; got 3"):
        unet.UNet(replace(UNET_PRESETS["tiny"], top_blocks=3))
