"""The per-example Gram's speed paths, each exact against the naive loop (float64): Conv2d
per-example gradients by channels-last patches and by the grouped convolution, and the Linear
one-position identity (a_i . a_j + 1)(d_i . d_j)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from confusion_cli import probes
from confusion_cli.probes import gram

RTOL = 1e-10


def convnet() -> nn.Module:
    """Strides, dilation, asymmetric padding and kernel, a bias-free conv, a 1x1 shortcut-like conv."""
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 5, (3, 2), stride=(2, 1), padding=(1, 0), bias=False), nn.Tanh(),
                         nn.Conv2d(5, 3, 2, dilation=2, padding=2), nn.ReLU(inplace=True),
                         nn.Conv2d(3, 3, 1, stride=2), nn.Flatten(), nn.LazyLinear(4))


# _patch_gram: by kernel offset / columns of the patches, uneven blocks / all columns at once
@pytest.mark.parametrize("column_block", [1, 120, 1 << 22])
@pytest.mark.parametrize("chunk_size", [4, None])  # 4 of 6: blocks of examples; None: the whole batch
# grouped convolution only / patches by output pixels / patches by fan-in
@pytest.mark.parametrize("patch_positions, patch_fan_in", [(0, 0), (10 ** 6, 0), (0, 10 ** 6)])
def test_conv_per_example_gradients_both_ways_match_the_naive_loop(monkeypatch, patch_positions, patch_fan_in,
                                                                   chunk_size, column_block):
    monkeypatch.setattr(gram, "PATCH_POSITIONS", patch_positions)
    monkeypatch.setattr(gram, "PATCH_FAN_IN", patch_fan_in)
    monkeypatch.setattr(gram, "COLUMN_BLOCK", column_block)
    calls = []
    monkeypatch.setattr(gram, "_patch_gram", lambda *a, real=gram._patch_gram: calls.append(1) or real(*a))
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = convnet().double()
    x = torch.randn(6, 2, 9, 7, generator=generator, dtype=torch.float64)
    model(x)  # materialise the lazy layer
    y = torch.randint(0, 4, (6,), generator=generator)
    expected = probes.naive_per_example_gram(model, F.cross_entropy, x, y)
    actual = probes.per_example_gram(model, F.cross_entropy, x, y, chunk_size=chunk_size)
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * float(expected.abs().max()))
    # the column-blocked Gram serves every conv layer by patches when the whole batch is one block
    assert len(calls) == (4 if (patch_positions or patch_fan_in) and chunk_size is None else 0)


def test_patches_are_the_unfolded_input_up_to_the_order_within_a_row():
    conv = nn.Conv2d(3, 2, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2)).double()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    out = conv(x)
    patches = gram._channels_last_patches(conv, x, tuple(out.shape[2:]))
    unfolded = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (B, C kh kw, L)
    reordered = unfolded.view(2, 3, 3 * 2, -1).permute(0, 3, 2, 1).reshape(2, -1, 3 * 3 * 2)
    torch.testing.assert_close(patches, reordered, rtol=0, atol=0)
    offsets = list(gram._offset_patches(conv, gram._padded_channels_last(conv, x), tuple(out.shape[2:])))
    assert len(offsets) == 3 * 2  # one (B, L, C) block per kernel offset, in the patches' column order
    torch.testing.assert_close(torch.cat(offsets, dim=2), patches, rtol=0, atol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_one_position_identity_matches_the_naive_loop(bias):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(7, 6, bias=bias), nn.ReLU(), nn.Linear(6, 3, bias=bias)).double()
    model[0].weight.requires_grad_(False)  # a bias-only layer takes the identity too
    x, y = torch.randn(5, 7, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0])
    expected = probes.naive_per_example_gram(model, F.cross_entropy, x, y)
    torch.testing.assert_close(probes.per_example_gram(model, F.cross_entropy, x, y), expected,
                               rtol=RTOL, atol=RTOL * float(expected.abs().max()))
