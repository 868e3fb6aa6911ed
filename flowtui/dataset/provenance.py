"""provenance.json: what produced a run, so a curve can be traced to its model, code and data.

Model path and a sha256 per weight file (free for a hub model in the Hugging Face cache, whose
blobs are named by their sha256; computed otherwise, and reused while the files' sizes and times
are unchanged), family, dtype, devices, flowtui and package versions, argv, the scoring rule,
seeds and the data hash. Each invocation (the first run and every --resume) is one session.
"""

from __future__ import annotations

import platform
import re
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from flowtui.dataset.readers import file_sha256

PACKAGES = ("torch", "transformers", "accelerate", "datasets", "numpy", "pillow", "matplotlib",
            "tokenizers", "safetensors")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("flowtui", *PACKAGES):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    from flowtui.version import __version__

    out["flowtui"] = __version__  # the code that ran, even from a source tree
    return out


def weight_hashes(folder: Path, known: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """{file name: {sha256, bytes}} for the weight files of a model folder. `known` (a previous
    provenance's entry) is reused for files whose size and mtime are unchanged."""
    known = known or {}
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(Path(folder).iterdir()):
        if not f.name.endswith(WEIGHT_SUFFIXES) or not f.is_file():
            continue
        real = f.resolve()
        st = real.stat()
        entry: dict[str, Any] = {"bytes": st.st_size, "mtime": st.st_mtime}
        old = known.get(f.name, {})
        if old.get("bytes") == st.st_size and old.get("mtime") == st.st_mtime and old.get("sha256"):
            entry["sha256"] = old["sha256"]
        elif real.parent.name == "blobs" and _SHA256.match(real.name):
            entry["sha256"] = real.name  # the hub cache names LFS blobs by their sha256
        else:
            entry["sha256"] = file_sha256(real)
        out[f.name] = entry
    return out


def hub_revision(folder: Path) -> str | None:
    """The commit of a model in the Hugging Face cache (its snapshots/<commit> folder)."""
    folder = Path(folder)
    if folder.parent.name == "snapshots" and re.match(r"^[0-9a-f]{40}$", folder.name):
        return folder.name
    return None


def build(
    previous: dict[str, Any] | None,
    model: dict[str, Any],
    data: dict[str, Any],
    run: dict[str, Any],
    session: dict[str, Any],
) -> dict[str, Any]:
    """The provenance to write: model/data/run as given, sessions = the previous ones + this."""
    sessions = list((previous or {}).get("sessions", []))
    sessions.append(session)
    return {
        "format": "flowtui.dataset.provenance",
        "version": 1,
        "model": model,
        "data": data,
        "run": run,
        "sessions": sessions,
    }


def session_info(world_size: int, device: str, argv: list[str] | None = None) -> dict[str, Any]:
    return {
        "started": now(),
        "finished": None,
        "argv": list(sys.argv if argv is None else argv),
        "world_size": world_size,
        "main_device": device,
        "platform": platform.platform(),
        "versions": versions(),
    }
