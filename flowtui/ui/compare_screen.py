"""The compare screen: two analyses side by side on one layer cursor (docs/definitions.md,
"Compare"). Every number comes from `flowtui.compare.compare()`; this draws it.

It needs no model: `flowtui compare A B` runs it in `CompareApp`, and the explorer opens it as
the `compare` mode when a pinned analysis (P) meets the next one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, cast

from rich.text import Text
from textual import events, work
from textual.actions import parse as parse_action
from textual.app import ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer

from flowtui.compare import Comparison, JointAttention, correlation_text, joint_attention
from flowtui.render.cells import DISPLAY_MODES
from flowtui.render.colormaps import next_colormap
from flowtui.render.maps import MAP_TITLES
from flowtui.textsafe import visible
from flowtui.ui.exports import ExportDone, ExportFailed, timestamp
from flowtui.ui.jobs import one_line
from flowtui.ui.keys import COMPARE_BINDINGS, COMPARE_NOTES
from flowtui.ui.screens import HelpScreen, PathPrompt
from flowtui.ui.state import THRESHOLD_STEP, ViewState
from flowtui.ui.widgets.answer_panel import first_fit
from flowtui.ui.widgets.compare_panels import SidePanel, layer_title, shares_text, sweep_text
from flowtui.ui.widgets.map_legend import first_fit as first_fit_str
from flowtui.ui.widgets.text_view import TextView

CSS = """
CompareScreen { layout: vertical; }
CompareScreen #cmp-sides { height: 1fr; }
CompareScreen SidePanel, CompareScreen #cmp-shares {
    border: round $panel-lighten-2;
    border-title-color: $primary;
    border-title-style: bold;
    border-subtitle-color: $text-muted;
    background: $surface;
}
CompareScreen #cmp-shares { height: auto; padding: 0 1; }
CompareScreen Footer.-compact FooterLabel { margin: 0 1 0 0; }
"""


class CompareScreen(Screen):
    """A and B on one layer cursor: `index` is the compared pair (`comparison.layers`) shown."""

    # cast: lists are invariant, though every Binding is a BindingType
    BINDINGS = cast(list[BindingType], COMPARE_BINDINGS)
    DEFAULT_CSS = CSS

    def __init__(self, comparison: Comparison, *, back: bool = False, stem: str = "compare"
                 ) -> None:
        super().__init__(name="compare")
        self.comparison = comparison
        self.back = back  # opened from the explorer: Escape goes back there
        self.stem = visible(stem) or "compare"
        self.index = 0
        self.view = ViewState(threshold=float(comparison.a.cam_settings.threshold))
        # joint_attention() per (view, sinks left out), computed on the first `m` or `k`
        self._joint: dict[tuple[int, bool], JointAttention] = {}

    def joint(self) -> JointAttention:
        key = (self.view.view, self.view.exclude_sinks)
        if key not in self._joint:
            self._joint[key] = joint_attention(self.comparison, *key)
        return self._joint[key]

    # --- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        c = self.comparison
        with Horizontal(id="cmp-sides"):
            yield SidePanel("A", Path(c.files[0]).name, c.a, id="side-a")
            yield SidePanel("B", Path(c.files[1]).name, c.b, id="side-b")
        with Vertical(id="cmp-shares"):
            yield TextView(id="cmp-shares-text")
            yield TextView(id="cmp-corr")
        yield Footer(compact=True)

    def sides(self) -> tuple[SidePanel, SidePanel]:
        return self.query_one("#side-a", SidePanel), self.query_one("#side-b", SidePanel)

    def on_mount(self) -> None:
        for side, an in zip(self.sides(), (self.comparison.a, self.comparison.b), strict=True):
            side.cam_view.set_source(an.image, an.cam_tokens, an.token_regions, an.token_views)
        self._sync()

    def on_resize(self, event: events.Resize) -> None:
        # As in the explorer: under 100 columns the palette's footer entry gives its room to
        # the screen's own keys (Ctrl+P still opens it, and ? lists it).
        wide = event.size.width >= 100
        for footer in self.query(Footer):
            if footer.show_command_palette != wide:
                footer.show_command_palette = wide
        self._sync()

    # --- what is shown ----------------------------------------------------------------------
    @property
    def shown_layers(self) -> tuple[int, int]:
        """The layer of A and the layer of B on screen."""
        lc = self.comparison.layers[self.index]
        return lc.layer_a, lc.layer_b

    def shown_correlation(self) -> str:
        return correlation_text(self.comparison, self.index)

    def _sync(self) -> None:
        c, v = self.comparison, self.view
        shares = self.query_one("#cmp-shares")
        width = shares.content_region.width or max(20, self.size.width - 4)
        shares.border_title = Text(layer_title(c, self.index, width - 2))
        self.query_one("#cmp-shares-text", TextView).set_text(
            shares_text(c, self.index, width))
        self.query_one("#cmp-corr", TextView).set_text(self._legend(width))
        name = MAP_TITLES.get(v.map_mode, v.map_mode)
        for side, tag, an, layer in zip(self.sides(), "ab", (c.a, c.b), self.shown_layers,
                                        strict=True):
            if v.map_mode == "attention":
                joint = self.joint()
                values = joint.values_a if tag == "a" else joint.values_b
                side.cam_view.set_map((f"attention-joint-{v.view}", v.exclude_sinks, None), values)
            else:
                side.cam_view.set_map(("cam", False, None), an.cam_tokens)
            shown = min(v.view, len(an.views) - 1)  # a side with fewer views: its last
            side.cam_view.set_view(replace(v, layer=layer, view=shown))
            room = max(8, (side.size.width or 40) - 4)
            where = f" · {visible(an.views[shown])}" if len(an.views) > 1 else ""
            side.border_subtitle = Text(first_fit_str(
                [f"{name}{where} · layer {layer}/{an.num_layers - 1}",
                 f"{name} · layer {layer}/{an.num_layers - 1}", f"L{layer}"], room))
            sweep_w = side.sweep.content_region.width or max(10, (side.size.width or 40) - 4)
            side.sweep.set_text(sweep_text(c, tag, sweep_w, layer, logp=self.size.height >= 36))

    def _legend(self, width: int) -> Text:
        """The CAM correlation at the layer (or why none) and the maps' one scale."""
        v = self.view
        corr = self.shown_correlation()
        if v.map_mode == "cam":
            scales = [f"both CAMs 0..1, threshold {v.threshold:.2f}, {v.colormap}",
                      f"CAMs 0..1 thr {v.threshold:.2f}", ""]
        else:
            joint = self.joint()
            vmax = float(joint.vmax[self.index])
            sinks = ""
            if v.exclude_sinks:
                n = int(joint.sinks[self.index])
                sinks = f", {n} sink token{'s' if n != 1 else ''} left out"
            scales = [f"both attention maps on one scale 0..{vmax:.3g}{sinks}, {v.colormap}",
                      f"attention 0..{vmax:.3g} both{sinks}", ""]
        forms = [Text.assemble((corr, "bold"), (f" · {s}" if s else "", "dim")) for s in scales]
        forms.append(Text(corr, "bold", no_wrap=True, overflow="ellipsis"))
        return first_fit(forms, width)

    # --- actions ----------------------------------------------------------------------------
    def _set(self, **changes: Any) -> None:
        self.view = replace(self.view, **changes)
        self._sync()

    def action_layer(self, delta: int) -> None:
        index = max(0, min(len(self.comparison.layers) - 1, self.index + delta))
        if index != self.index:
            self.index = index
            self._sync()

    def action_layer_edge(self, last: int) -> None:
        self.index = len(self.comparison.layers) - 1 if last else 0
        self._sync()

    def action_threshold(self, direction: int) -> None:
        thr = round(min(0.95, max(0.0, self.view.threshold + direction * THRESHOLD_STEP)), 2)
        self._set(threshold=thr)

    def action_cycle_colormap(self) -> None:
        self._set(colormap=next_colormap(self.view.colormap))

    def action_cycle_mode(self) -> None:
        i = DISPLAY_MODES.index(self.view.mode)
        self._set(mode=DISPLAY_MODES[(i + 1) % len(DISPLAY_MODES)])

    def num_views(self) -> int:
        return max(len(self.comparison.a.views), len(self.comparison.b.views))

    def action_cycle_view(self) -> None:
        if self.num_views() > 1:
            self._set(view=(self.view.view + 1) % self.num_views())

    def action_cycle_map(self) -> None:
        c = self.comparison
        if self.view.map_mode == "cam":
            missing = [t for t, an in (("A", c.a), ("B", c.b)) if an.attention_tokens is None]
            if missing:
                self.app.notify(f"{' and '.join(missing)} has no attention map (a snapshot "
                                "before version 2); only the CAM compares", severity="warning")
                return
        self._set(map_mode="attention" if self.view.map_mode == "cam" else "cam")
        self.refresh_bindings()

    def action_toggle_sinks(self) -> None:
        self._set(exclude_sinks=not self.view.exclude_sinks)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back":
            return self.back
        if action == "threshold":
            return self.view.map_mode == "cam"
        if action == "toggle_sinks":
            return self.view.map_mode == "attention"
        if action == "cycle_view":
            return self.num_views() > 1
        return True

    def key_commands(self) -> Iterable[SystemCommand]:
        """The palette's entries: every key that applies now, but quit."""
        for b in COMPARE_BINDINGS:
            _, name, params = parse_action(b.action)
            if b.id != "compare.quit" and self.check_action(name, params) is not False:
                yield SystemCommand(b.description, f"{b.key_display or b.key} · {b.tooltip}",
                                    partial(self.app.run_action, b.action, self))

    def action_help(self) -> None:
        keys = [b for b in COMPARE_BINDINGS if b.id != "compare.back" or self.back]
        self.app.push_screen(HelpScreen(keys, COMPARE_NOTES))

    async def action_quit(self) -> None:
        await self.app.action_quit()

    def action_back(self) -> None:
        if self.back:
            self.app.switch_mode("explorer")

    # --- exports ----------------------------------------------------------------------------
    def action_export(self) -> None:
        self.app.push_screen(PathPrompt(
            "Export the pair as two snapshots: NAME-a.flowtui and NAME-b.flowtui",
            f"{self.stem}-{timestamp()}"), self._export_to)

    def _export_to(self, name: str | None) -> None:
        if name:
            self._export_worker(name.removesuffix(".flowtui"))

    @work(thread=True, exit_on_error=False, group="export")
    def _export_worker(self, name: str) -> None:
        c = self.comparison
        try:
            # Never over either input, nor over any file that is not a snapshot.
            written = [an.save(f"{name}-{tag}.flowtui", inputs=list(c.files))
                       for tag, an in (("a", c.a), ("b", c.b))]
            self.post_message(ExportDone("the pair", " and ".join(map(str, written))))
        except Exception as exc:  # noqa: BLE001 - any failure is one notification
            self.post_message(ExportFailed(one_line(exc)))

    def action_export_png(self) -> None:
        self.app.push_screen(PathPrompt("Export the comparison figure (PNG)",
                                        f"{self.stem}-{timestamp()}.png"), self._png_to)

    def _png_to(self, path: str | None) -> None:
        if path:
            self._png_worker(path)

    @work(thread=True, exit_on_error=False, group="export")
    def _png_worker(self, path: str) -> None:
        from flowtui.compare import save_png

        try:
            written = save_png(self.comparison, path, tuple(self.comparison.files))
            self.post_message(ExportDone("the figure", str(written)))
        except Exception as exc:  # noqa: BLE001
            self.post_message(ExportFailed(one_line(exc)))

    def on_export_done(self, message: ExportDone) -> None:
        self.app.notify(f"saved {message.what} to {message.path}", timeout=5)

    def on_export_failed(self, message: ExportFailed) -> None:
        self.app.notify(message.reason, title="export failed", severity="error", timeout=10)
