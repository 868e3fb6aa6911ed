"""The engine interface over a byte stream: the explorer here, the model on a GPU box over ssh.

    engine = flowtui.connect("gpu-box", model="llava-hf/llava-1.5-7b-hf")

`protocol` (frames of JSON + .npy arrays), `server` (`flowtui serve --stdio` / `--daemon`) and
`client` (`connect`, `RemoteEngine`). Never imports Textual or Rich; docs/remote.md has the
protocol.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RemoteEngine", "connect"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from flowtui.remote import client

        return getattr(client, name)
    raise AttributeError(f"module 'flowtui.remote' has no attribute {name!r}")
