"""Exact stand-ins for numpy functions whose own Python dominates on the tiny arrays of a small image.

A 28x28 digit's reading calls np.median, np.percentile and np.pad a dozen times; each spends ~10-30 us in numpy's
Python wrappers (argument checks, nan checks, padding loops) for microseconds of work. These return the same
values, bit for bit, as the numpy call each names (tests/test_small_image_paths.py checks them against it).
"""

from __future__ import annotations

import numpy as np


def median(values: np.ndarray) -> np.floating | float:
    """np.median(values) (all axes) of a float array: the same middle values, their mean rounded as numpy
    rounds it (sum in the array's type, halved), NaN if any value is NaN. Other types: np.median itself."""
    flat = np.asarray(values).ravel()
    size = flat.size
    if size == 0 or flat.dtype.kind != "f":
        return np.median(flat)  # its own warning and NaN, its own rules for integers
    half = size // 2
    part = np.partition(flat, [half - 1, half, size - 1] if size % 2 == 0 else [half, size - 1])
    if np.isnan(part[-1]):  # NaNs partition to the end, where np.median looks for them
        return part[-1]
    if size % 2:
        return part[half]
    return flat.dtype.type((part[half - 1] + part[half]) / 2)


def pad_odd_reflect(image: np.ndarray, width: int) -> np.ndarray:
    """np.pad(image, width, mode="reflect", reflect_type="odd") for a 2-D array: each side continues the
    image's gradient (2 * edge - mirror), rows first, then columns over the padded rows, as numpy does."""
    height, length = image.shape
    if width <= 0 or width > height - 1 or width > length - 1:
        return np.pad(image, width, mode="reflect", reflect_type="odd")  # numpy's repeated reflection
    out = np.empty((height + 2 * width, length + 2 * width), image.dtype)
    middle = slice(width, width + length)
    out[width : width + height, middle] = image
    out[:width, middle] = 2 * image[0:1] - image[width:0:-1]
    out[width + height :, middle] = 2 * image[-1:] - image[-2 : -width - 2 : -1]
    columns = out[:, middle]
    out[:, :width] = 2 * columns[:, 0:1] - columns[:, width:0:-1]
    out[:, width + length :] = 2 * columns[:, -1:] - columns[:, -2 : -width - 2 : -1]
    return out


def percentile(values: np.ndarray, q: float) -> np.floating | float:
    """np.percentile(values, q) (all axes, the default "linear" method) of a float array for a scalar q: the
    same two neighbouring values and numpy's own interpolation (`_lerp`: from the lower one below the
    midpoint, back from the upper one above it). NaN present, other types or q: np.percentile itself."""
    flat = np.asarray(values).ravel()
    size = flat.size
    if size == 0 or flat.dtype.kind != "f" or type(q) not in (int, float) or not 0 <= q <= 100:
        return np.percentile(values, q)
    virtual = (size - 1) * np.true_divide(q, 100)  # float64, as numpy computes the index
    if virtual >= size - 1:
        lower = upper = size - 1
    else:
        lower = int(np.floor(virtual))
        upper = lower + 1
    part = np.partition(flat, sorted({0, lower, upper, size - 1}))
    if np.isnan(part[-1]):
        return np.percentile(values, q)
    low, high = part[lower], part[upper]
    weight = float(virtual - lower) if upper != lower else float(virtual + 1)  # numpy's gamma (index -1 there)
    step = high - low
    if weight >= 0.5:
        return flat.dtype.type(high - step * (1 - weight))
    return flat.dtype.type(low + step * weight)
