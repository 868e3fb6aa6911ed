"""Helpers for Pilot tests of the explorer."""

from __future__ import annotations

from flowtui.ui.widgets.image_panel import CamView


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


def frame_styles(app) -> list:
    """The colours of the image panel's current frame (what is on screen)."""
    return [seg.style for strip in app.query_one(CamView).frame() for seg in strip]


async def settle(app, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def until(pilot, condition, what: str, timeout: float = 10.0) -> None:
    """Pause until `condition()` holds (e.g. a drawing that waits for a screen refresh), failing
    with `what` after `timeout` seconds rather than trusting a fixed delay."""
    import time

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not after {timeout:.0f} s: {what}")
        await pilot.pause()
