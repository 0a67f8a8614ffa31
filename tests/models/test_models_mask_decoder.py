"""The mask decoder's upsampling as matrix products in sub-pixel order equals SAM's transposed convolutions."""

from __future__ import annotations

import torch
from torch import nn

from medseg.models.mask_decoder import _transposed_conv2x2, map_to_subpixels, subpixels_to_map


def test_a_2x2_stride_2_transposed_convolution_is_a_product_on_token_rows():
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(8, 5, 2, stride=2)
    image = torch.randn(2, 8, 3, 4)  # (B, C, h, w), h != w so a swapped axis shows
    rows = image.flatten(2).transpose(1, 2)  # (B, h*w, C), row-major over (y, x)
    once = _transposed_conv2x2(rows, conv)  # (B, 4hw, 5) in order (i, j, ky, kx)
    expected = conv(image)  # (B, 5, 2h, 2w)
    assert torch.allclose(map_to_subpixels(expected, 1), once, atol=1e-6)

    conv2 = nn.ConvTranspose2d(5, 3, 2, stride=2)
    twice = _transposed_conv2x2(once, conv2)  # (B, 16hw, 3) in order (i, j, ky1, kx1, ky2, kx2)
    assert torch.allclose(subpixels_to_map(twice, 3, 4), conv2(expected), atol=1e-6)


def test_subpixel_order_round_trips():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).view(2, 3, 8, 12)
    assert torch.equal(subpixels_to_map(map_to_subpixels(x, 2), 2, 3), x)
