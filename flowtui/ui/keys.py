"""The explorer's keys: one table for the footer, the palette, the help screen and the README.

Ids and descriptions are the public names of the keys (the README lists every id).
"""

from __future__ import annotations

from textual.binding import Binding

# Footer groups: one label for a pair of keys, so the footer fits 80 columns.
_LAYER_KEYS = Binding.Group("Layer", compact=True)
_THRESHOLD_KEYS = Binding.Group("Thr", compact=True)
_TOKEN_KEYS = Binding.Group("Token", compact=True)

KEY_BINDINGS: list[Binding] = [
    Binding(
        "left,h",
        "layer(-1)",
        "Layer ◀",
        key_display="←",
        id="layer.prev",
        group=_LAYER_KEYS,
        tooltip="Previous layer (every panel follows)",
    ),
    Binding(
        "right,l",
        "layer(1)",
        "Layer ▶",
        key_display="→",
        id="layer.next",
        group=_LAYER_KEYS,
        tooltip="Next layer (every panel follows)",
    ),
    Binding(
        "home", "layer_edge(0)", "First layer", show=False, id="layer.first", tooltip="First layer"
    ),
    Binding(
        "end", "layer_edge(1)", "Last layer", show=False, id="layer.last", tooltip="Last layer"
    ),
    Binding(
        "comma",
        "answer_token(-1)",
        "Token ◀",
        key_display=",",
        id="answer.token-prev",
        group=_TOKEN_KEYS,
        tooltip="Previous answer token (every panel follows; from the whole answer: the last)",
    ),
    Binding(
        "full_stop",
        "answer_token(1)",
        "Token ▶",
        key_display=".",
        id="answer.token-next",
        group=_TOKEN_KEYS,
        tooltip="Next answer token (every panel follows; from the whole answer: the first)",
    ),
    Binding(
        "A",
        "whole_answer",
        "Whole answer",
        key_display="A",
        show=False,
        id="answer.whole",
        tooltip="Back to the whole answer (every panel shows all answer tokens together)",
    ),
    Binding(
        "left_square_bracket",
        "threshold(-1)",
        "Thr −",
        key_display="[",
        id="cam.threshold-down",
        group=_THRESHOLD_KEYS,
        tooltip="CAM threshold down by 0.05 (CAM map only)",
    ),
    Binding(
        "right_square_bracket",
        "threshold(1)",
        "Thr +",
        key_display="]",
        id="cam.threshold-up",
        group=_THRESHOLD_KEYS,
        tooltip="CAM threshold up by 0.05 (CAM map only)",
    ),
    Binding(
        "c",
        "cycle_colormap",
        "Colormap",
        id="cam.colormap",
        tooltip="Cycle colormap: viridis, jet (as in the paper), magma, grey",
    ),
    Binding(
        "o",
        "cycle_mode",
        "Mode",
        id="cam.mode",
        tooltip="Cycle display: overlay, heatmap only, image only",
    ),
    Binding(
        "w",
        "cycle_view",
        "View",
        id="map.view",
        tooltip="Cycle the image's views (global, tiles, …) if it has several",
    ),
    Binding(
        "m",
        "cycle_map",
        "Map",
        id="map.mode",
        tooltip="Cycle map: LLaVA-CAM / answer's attention / logit lens word / lens words",
    ),
    Binding(
        "slash",
        "lens_word",
        "Lens word",
        key_display="/",
        show=False,
        id="lens.word",
        tooltip="Logit lens: map another word's probability (empty: the answer's first token)",
    ),
    Binding(
        "k",
        "toggle_sinks",
        "Sinks",
        id="map.sinks",
        tooltip="Attention map: leave sink tokens out of the colour scale",
    ),
    Binding(
        "b",
        "toggle_map_style",
        "Style",
        show=False,
        id="map.style",
        tooltip="Real pixels: map in token regions or smooth (bilinear)",
    ),
    Binding(
        "g",
        "toggle_heads",
        "Heads",
        id="flow.heads",
        tooltip="Per-head shares of the current layer",
    ),
    Binding(
        "v",
        "toggle_per_token",
        "Per token",
        show=False,
        id="flow.per-token",
        tooltip="Shares per token (divided by group size) instead of per group",
    ),
    Binding(
        "t",
        "focus_truncation",
        "Truncate",
        # Off the footer to make room for the map keys: the panel's title shows "t focus".
        show=False,
        id="truncation.focus",
        tooltip="Focus the truncation panel (Enter runs at K)",
    ),
    Binding(
        "s",
        "sweep",
        "Sweep",
        id="truncation.sweep",
        tooltip="Sweep K = 0..L and find the cliff layer",
    ),
    Binding(
        "K",
        "knockout",
        "Knockout",
        key_display="K",
        show=False,
        id="knockout.view",
        tooltip="Knockout view in place of the shares (runs the four standard flows if needed)",
    ),
    Binding(
        "x",
        "cancel",
        "Cancel run",
        show=False,
        id="engine.cancel",
        tooltip="Cancel the running sweep, truncation or knockout",
    ),
    Binding(
        "e",
        "export",
        "Export",
        id="export.snapshot",
        tooltip="Export a .flowtui snapshot (with the screen as SVG)",
    ),
    Binding(
        "p",
        "export_pngs",
        "Export PNGs",
        show=False,
        id="export.pngs",
        tooltip="Export the map on screen as PNGs: one per layer and view",
    ),
    Binding(
        "P",
        "pin",
        "Pin",
        key_display="P",
        show=False,
        id="compare.pin",
        tooltip="Pin this analysis; the next one shown opens a compare against it",
    ),
    Binding(
        "a",
        "ask",
        "Ask",
        show=False,
        id="model.ask",
        tooltip="Ask the model another question about this image (with a pin: compare them)",
    ),
    Binding(
        "i",
        "ask_image",
        "Image",
        show=False,
        id="model.image",
        tooltip="Ask the same question about another image file (with a pin: compare them)",
    ),
    Binding(
        "r",
        "reconnect",
        "Reconnect",
        show=False,
        id="engine.reconnect",
        tooltip="Reconnect to the remote model (after a dropped connection)",
    ),
    Binding(
        "question_mark", "help", "Help", key_display="?", id="app.help", tooltip="Show all keys"
    ),
    Binding("q", "quit", "Quit", id="app.quit", tooltip="Quit at once, even mid-run"),
]

HELP_NOTES = (
    "Answer tokens: , and . move a cursor through the answer (every panel shows that token's\n"
    "  shares, head shares, attention and CAM; titles name it); A returns to the whole answer.\n"
    "In the truncation panel: ⏎ runs at K (empty K follows the current layer), Esc returns.\n"
    "The attention map is scaled 0..max per layer and view; the threshold applies to the CAM.\n"
    "A sink token: above 10x the view's median attention, at most the largest 2% of the view.\n"
    "Ctrl+P opens the command palette (the actions that apply now, and themes).\n"
    "Heatmap colormaps are independent of the theme."
)

# The compare screen's keys (flowtui.ui.compare_screen): the explorer's names where they match.
COMPARE_BINDINGS: list[Binding] = [
    Binding("left,h", "layer(-1)", "Layer ◀", key_display="←", id="compare.layer.prev",
            group=_LAYER_KEYS, tooltip="Previous compared layer (both sides follow)"),
    Binding("right,l", "layer(1)", "Layer ▶", key_display="→", id="compare.layer.next",
            group=_LAYER_KEYS, tooltip="Next compared layer (both sides follow)"),
    Binding("home", "layer_edge(0)", "First layer", show=False, id="compare.layer.first",
            tooltip="First compared layer"),
    Binding("end", "layer_edge(1)", "Last layer", show=False, id="compare.layer.last",
            tooltip="Last compared layer"),
    Binding("left_square_bracket", "threshold(-1)", "Thr −", key_display="[",
            id="compare.threshold-down", group=_THRESHOLD_KEYS,
            tooltip="CAM threshold down by 0.05, both maps (CAM map only)"),
    Binding("right_square_bracket", "threshold(1)", "Thr +", key_display="]",
            id="compare.threshold-up", group=_THRESHOLD_KEYS,
            tooltip="CAM threshold up by 0.05, both maps (CAM map only)"),
    Binding("w", "cycle_view", "View", id="compare.view",
            tooltip="Cycle the images' views (global, tiles, …) where one has several"),
    Binding("m", "cycle_map", "Map", id="compare.map",
            tooltip="Switch both maps: LLaVA-CAM / answer's attention (one scale for both)"),
    Binding("k", "toggle_sinks", "Sinks", id="compare.sinks",
            tooltip="Attention maps: leave both sides' sink tokens out of the one scale"),
    Binding("c", "cycle_colormap", "Colormap", id="compare.colormap",
            tooltip="Cycle colormap: viridis, jet (as in the paper), magma, grey"),
    Binding("o", "cycle_mode", "Mode", show=False, id="compare.mode",
            tooltip="Cycle display: overlay, heatmap only, image only"),
    Binding("e", "export", "Export", id="compare.export",
            tooltip="Export the pair as two .flowtui snapshots (NAME-a, NAME-b)"),
    Binding("p", "export_png", "PNG", id="compare.png",
            tooltip="Export the comparison figure as a PNG (as `compare --png`)"),
    Binding("escape", "back", "Back", id="compare.back",
            tooltip="Back to the explorer (when the compare came from a pin)"),
    Binding("question_mark", "help", "Help", key_display="?", id="compare.help",
            tooltip="Show all keys"),
    Binding("q", "quit", "Quit", id="compare.quit", tooltip="Quit at once"),
]

COMPARE_NOTES = (
    "Both sides follow one layer cursor; different depths pair by relative depth l/L.\n"
    "Share difference = A − B per group; CAM r = Pearson over the same image tokens only.\n"
    "Both maps are drawn on one colour scale (the attention: the larger maximum of the two;\n"
    "k leaves each side's sink tokens out of it, as in the explorer).\n"
    "Sweeps: ▲ this side's cliff, △ the other side's cliff at the same relative depth."
)

# The dataset compare screen's keys (flowtui.ui.dataset_compare_screen).
_K_KEYS = Binding.Group("K", compact=True)
DATASET_COMPARE_BINDINGS: list[Binding] = [
    Binding("left,h", "k(-1)", "K ◀", key_display="←", id="dataset-compare.k.prev",
            group=_K_KEYS, tooltip="Cursor to the previous K (every run follows)"),
    Binding("right,l", "k(1)", "K ▶", key_display="→", id="dataset-compare.k.next",
            group=_K_KEYS, tooltip="Cursor to the next K (every run follows)"),
    Binding("home", "k_edge(0)", "K = 0", show=False, id="dataset-compare.k.first",
            tooltip="Cursor to K = 0 (the image hidden from every layer)"),
    Binding("end", "k_edge(1)", "K = L", show=False, id="dataset-compare.k.last",
            tooltip="Cursor to K = L (the unmodified model)"),
    Binding("e", "export", "Export", id="dataset-compare.export",
            tooltip="Write compare.csv and compare.png into a folder (as --out)"),
    Binding("question_mark", "help", "Help", key_display="?", id="dataset-compare.help",
            tooltip="Show all keys"),
    Binding("q", "quit", "Quit", id="dataset-compare.quit", tooltip="Quit at once"),
]

DATASET_COMPARE_NOTES = (
    "Each panel: one run's accuracy under truncation `all` from layer K, on the scale 0..1.\n"
    "▲ marks the run's dataset cliff: the smallest K from which accuracy stays within δ of\n"
    "its baseline (K = L). Runs of different depths follow the cursor by relative depth K/L."
)
