"""Exact, invertible reorientation of arrays to a canonical axis order.

autouad works on axial slices. A volume's numpy array (SimpleITK order) is permuted and flipped so
that axis 0 runs inferior->superior, axis 1 anterior->posterior and axis 2 right->left (ITK's LPS
convention read in numpy order), whatever the file's direction matrix. Only permutations and flips
are used (no interpolation), so every voxel maps back to exactly one voxel of the file.
2D images keep their axes and get a leading slice axis of length 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autouad.utils.images import Geometry


@dataclass(frozen=True)
class Orientation:
    """``permutation[k]`` is the file-array axis that becomes canonical axis k; ``flips[k]`` says
    whether canonical axis k runs reversed relative to that file axis."""
    permutation: tuple[int, ...]
    flips: tuple[bool, ...]
    is_2d: bool

    def to_dict(self) -> dict:
        return {"permutation": list(self.permutation), "flips": list(self.flips), "is_2d": self.is_2d}

    @classmethod
    def from_dict(cls, d: dict) -> "Orientation":
        return cls(tuple(d["permutation"]), tuple(bool(f) for f in d["flips"]), bool(d["is_2d"]))

    # -- arrays ---------------------------------------------------------------------------------
    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """File array (spatial axes last) -> canonical array, extra leading axes (channels) kept."""
        lead = array.ndim - (2 if self.is_2d else 3)
        if self.is_2d:
            return array[..., None, :, :]
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + p for p in self.permutation))
        flip_axes = tuple(lead + k for k, f in enumerate(self.flips) if f)
        return np.flip(out, flip_axes) if flip_axes else out

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        lead = array.ndim - 3
        if self.is_2d:
            return array[..., 0, :, :]
        flip_axes = tuple(lead + k for k, f in enumerate(self.flips) if f)
        out = np.flip(array, flip_axes) if flip_axes else array
        inverse = np.argsort(self.permutation)
        return np.transpose(out, tuple(range(lead)) + tuple(lead + int(i) for i in inverse))

    # -- indices and spacing ----------------------------------------------------------------------
    def canonical_shape(self, file_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.is_2d:
            return (1,) + tuple(file_shape)
        return tuple(file_shape[p] for p in self.permutation)

    def canonical_spacing(self, geometry: Geometry) -> tuple[float, ...]:
        """Spacing in canonical (slice, row, column) order; 2D images get slice spacing 1."""
        numpy_spacing = tuple(reversed(geometry.spacing))
        if self.is_2d:
            return (1.0,) + numpy_spacing
        return tuple(numpy_spacing[p] for p in self.permutation)

    def index_to_file(self, canonical_index, file_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Map a canonical voxel index to the file array's index."""
        if self.is_2d:
            return tuple(int(v) for v in canonical_index[1:])
        canonical_shape = self.canonical_shape(file_shape)
        file_index = [0] * 3
        for k, p in enumerate(self.permutation):
            v = int(canonical_index[k])
            file_index[p] = canonical_shape[k] - 1 - v if self.flips[k] else v
        return tuple(file_index)


def orientation_of(geometry: Geometry) -> Orientation:
    if geometry.dimension == 2:
        return Orientation((0, 1), (False, False), True)
    if geometry.dimension != 3:
        raise ValueError(f"only 2D and 3D images are supported, got {geometry.dimension}D")
    d = np.asarray(geometry.direction, dtype=float).reshape(3, 3)  # column i: direction of ITK axis i
    # assign each physical axis (x=R->L, y=A->P, z=I->S) to the ITK axis most aligned with it
    assignment = [-1, -1, -1]
    order = np.argsort(-np.abs(d), axis=None)
    used_phys, used_axis = set(), set()
    for flat in order:
        phys, axis = divmod(int(flat), 3)
        if phys in used_phys or axis in used_axis:
            continue
        assignment[phys] = axis
        used_phys.add(phys)
        used_axis.add(axis)
    # canonical numpy axes: 0 <- physical z, 1 <- physical y, 2 <- physical x
    # an ITK axis i is numpy axis 2 - i
    permutation, flips = [], []
    for phys in (2, 1, 0):
        itk_axis = assignment[phys]
        permutation.append(2 - itk_axis)
        flips.append(bool(d[phys, itk_axis] < 0))
    return Orientation(tuple(permutation), tuple(flips), False)
