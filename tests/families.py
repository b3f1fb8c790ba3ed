"""The tests' family table, made from the op table (``lcnumba.table``): one row per family and tile mode.

Every test module that loops over the convolution family imports ``FAMILIES``
(and the ``families`` parametrisation) from here, so a family added to the op
table is tested everywhere without touching the test modules.
"""

from dataclasses import dataclass

import pytest

import lcnumba
from lcnumba import table, testing


@dataclass(frozen=True)
class Family:
    """One public op family of the convolution table: its name prefix, weight sharing, spatial rank, tile mode."""

    name: str
    sharing: str  # "shared", "tiled" or "local"
    spatial: int  # 2 for (N, C, H, W), 1 for (N, C, L)
    tile_mode: str | None = None

    def __str__(self):
        return self.name if self.tile_mode is None else f"{self.name}-{self.tile_mode}"

    def op(self, part):
        return getattr(lcnumba, f"{self.name}_{part}")

    def ref(self, part):
        return getattr(testing, f"{self.name}_{part}")

    @property
    def row(self):
        return table.family(self.name)

    @property
    def mode(self):
        return {} if self.tile_mode is None else {"tile_mode": self.tile_mode}


def _rows(rows):
    return [Family(fam.name, fam.sharing, fam.spatial, mode)
            for fam in rows
            for mode in (table.TILE_MODES if fam.has_tiles else (None,))]


FAMILIES = _rows(table.CONV_FAMILIES)
#: The transposed families (``lcnumba.table.TRANSPOSE_FAMILIES``), tested by their own modules.
TRANSPOSED = _rows(table.TRANSPOSE_FAMILIES)
CONV_NAMES = tuple(fam.name for fam in table.CONV_FAMILIES)
PARTS = table.CONV_PASSES
TILED = [fam for fam in FAMILIES if fam.sharing == "tiled"]
LOCAL = [fam for fam in FAMILIES if fam.sharing == "local"]
FAMILIES_2D = [fam for fam in FAMILIES if fam.spatial == 2]
families = pytest.mark.parametrize("fam", FAMILIES, ids=str)
transposed = pytest.mark.parametrize("fam", TRANSPOSED, ids=str)
