"""Independent NumPy references written straight from the definitions (float64)."""

import numpy as np


def conv_transpose_ref(x, kernel, strides, crops, dilation, groups=1):
    """Scatter definition: input sample i adds x[i] * kernel[j] at i*s + j*d, then crop.

    x: (N, *spatial, C_in); kernel: (*window, C_in, C_out // groups);
    crops: one (lo, hi) per spatial dim, cropped from the full output (hi < 0 pads zeros).
    """
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    n = x.ndim - 2
    spatial, window = x.shape[1:-1], kernel.shape[:-2]
    c_in, c_out_g = kernel.shape[-2], kernel.shape[-1]
    c_in_g = c_in // groups
    full = [(L - 1) * s + d * (k - 1) + 1 for L, s, d, k in zip(spatial, strides, dilation, window)]
    extra = [max(0, -hi) for _, hi in crops]
    out = np.zeros((x.shape[0], *(f + e for f, e in zip(full, extra)), c_out_g * groups))
    for i in np.ndindex(*spatial):
        where = tuple(
            slice(ii * s, ii * s + d * (k - 1) + 1, d)
            for ii, s, d, k in zip(i, strides, dilation, window)
        )
        for g in range(groups):
            xi = x[(slice(None), *i, slice(g * c_in_g, (g + 1) * c_in_g))]
            kg = kernel[..., g * c_in_g : (g + 1) * c_in_g, :]
            contrib = np.tensordot(xi, kg, axes=([1], [n]))  # (N, *window, C_out_g)
            out[(slice(None), *where, slice(g * c_out_g, (g + 1) * c_out_g))] += contrib
    index = tuple(slice(lo, f - hi) for f, (lo, hi) in zip(full, crops))
    return out[(slice(None), *index)]


def keras_crops(padding, k_eff, s, op):
    """Keras' output-size rules, written from its documented output shapes."""
    if padding == "VALID":
        size_extra = max(k_eff, s) - k_eff if op is None else op
        return 0, -size_extra
    if op is None:  # output L*s: total crop k_eff - s, the odd sample from the end
        total = k_eff - s
    else:  # output (L-1)*s + k_eff % 2 + op
        total = 2 * (k_eff // 2) - op
    lo = max(total // 2, 0) if total >= 0 else 0
    return lo, total - lo
