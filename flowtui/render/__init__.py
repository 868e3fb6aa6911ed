"""numpy -> terminal cells: colormaps, image + CAM -> half-block cells, sparklines, PNGs; the
map at real pixels (overlay.py) and which graphics protocol the terminal has (terminal.py).

Plain numpy/PIL only (no Rich, no Textual) so it is reusable outside the UI and easy to test.
"""

from flowtui.render.cells import DISPLAY_MODES, CamRenderer, CellGrid, compose_pixels, fit_cells
from flowtui.render.colormaps import COLORMAPS, apply_colormap, colormap_lut

__all__ = [
    "COLORMAPS",
    "DISPLAY_MODES",
    "CamRenderer",
    "CellGrid",
    "apply_colormap",
    "colormap_lut",
    "compose_pixels",
    "fit_cells",
]
