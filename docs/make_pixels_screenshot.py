"""Write docs/pixels-kitty.png: the map panel as a kitty terminal shows it (both map styles),
beside the same layer in half-blocks, from the escapes the explorer writes.

    python docs/make_pixels_screenshot.py [--layer 3] [--out docs/pixels-kitty.png]

The explorer runs headless at 120x40 with the kitty protocol forced; the image it sends (the
kitty escape stream, base64 PNG chunks) is parsed back and drawn at 10x20 pixels per cell,
beside the half-block cells of the same panel drawn at the same cell size. Uses the built-in
toy model on the README's toy scene (about half a minute on a CPU), or --snapshot FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
APC = re.compile(r"\x1b_G([^;\x1b]*)(?:;([^\x1b]*))?\x1b\\")
CELL = (10, 20)


def kitty_image(sent: list[str]) -> np.ndarray:
    """The last image placed in the kitty stream `sent`, decoded."""
    data: dict[str, str] = {}
    placed = None
    for chunk in sent:
        for keys_text, payload in APC.findall(chunk):
            keys = dict(kv.split("=", 1) for kv in keys_text.split(","))
            if keys.get("a") == "p":
                placed = data.pop(keys["i"])
            elif keys.get("a") != "d":
                data[keys["i"]] = data.get(keys["i"], "") + payload
    if placed is None:
        raise SystemExit("no kitty image in the stream")
    png = base64.b64decode(placed)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def half_blocks(view, layer: int) -> np.ndarray:
    """The half-block cells CamView draws for `layer` in the same panel, at CELL pixels."""
    w, h = view.size
    r = view.renderer
    cols, rows = r.fit(w, h)
    v = view.view
    mark = view.peak_of(view._key, layer, v.view) if view.peak_of else None
    grid = r.cells(layer, cols, rows, v.mode, v.threshold, v.colormap, v.view, mark)
    cw, ch = CELL
    top = np.repeat(np.repeat(grid.top, cw, axis=1), ch // 2, axis=0)
    bottom = np.repeat(np.repeat(grid.bottom, cw, axis=1), ch // 2, axis=0)
    out = np.empty((rows * ch, cols * cw, 3), np.uint8)
    for r_ in range(rows):
        out[r_ * ch: r_ * ch + ch // 2] = top[r_ * (ch // 2): (r_ + 1) * (ch // 2)]
        out[r_ * ch + ch // 2: (r_ + 1) * ch] = bottom[r_ * (ch // 2): (r_ + 1) * (ch // 2)]
    return out


async def capture(analysis, layer: int, style: str) -> tuple[np.ndarray, np.ndarray]:
    from flowtui.render.terminal import Graphics
    from flowtui.ui.app import FlowtuiApp

    app = FlowtuiApp(analysis=analysis, graphics=Graphics("kitty", "forced"), map_style=style)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        for _ in range(layer):
            await pilot.press("right")
        await pilot.pause()
        view = app.image_panel.cam_view
        kitty = kitty_image(view.sent)
        blocks = half_blocks(view, layer)
    return kitty, blocks


def side_by_side(panels: list[tuple[str, np.ndarray]]) -> Image.Image:
    pad, head = 16, 28
    h = max(p.shape[0] for _, p in panels)
    w = sum(p.shape[1] for _, p in panels) + (len(panels) + 1) * pad
    out = Image.new("RGB", (w, h + head + pad), (24, 24, 28))
    draw = ImageDraw.Draw(out)
    x = pad
    for label, p in panels:
        out.paste(Image.fromarray(p), (x, head))
        draw.text((x, 8), label, fill=(220, 220, 220))
        x += p.shape[1] + pad
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--snapshot", default=None)
    ap.add_argument("--out", default=str(ROOT / "docs" / "pixels-kitty.png"))
    args = ap.parse_args()
    if args.snapshot:
        from flowtui.engine.snapshot import load_snapshot

        analysis = load_snapshot(args.snapshot)
    else:
        import flowtui

        engine = flowtui.load_engine(device="cpu", dtype="float32")
        analysis = engine.analyze(ROOT / "sample_images" / "toy_scene_1.png",
                                  "Is there a red circle?")
    regions, blocks = asyncio.run(capture(analysis, args.layer, "regions"))
    smooth, _ = asyncio.run(capture(analysis, args.layer, "smooth"))
    side_by_side([
        (f"half-blocks, 2 pixels per cell (CAM layer {args.layer})", blocks),
        ("kitty graphics: regions (parsed escape stream)", regions),
        ("kitty graphics: smooth (bilinear)", smooth),
    ]).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
