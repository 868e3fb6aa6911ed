"""What `flowtui doctor` checks: the environment (Python, torch and its devices, the packages
against the tested ranges, ssh, the daemon's socket) and a self-test that builds a tiny model of
every supported family and compares an analysis and a sweep, through the real code path, with
the independent eager references.

Results are `Item`s (plain data, JSON-ready); the CLI draws them. No Textual or Rich here: the
terminal's colour check, which asks Rich, lives in the CLI.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from flowtui import versions
from flowtui.version import __version__

OK, WARN, FAIL = "ok", "warn", "fail"
# Sweep log-probabilities against the eager reference (as tests/engine/test_families.py); shares are
# sums of probabilities, tighter.
LOGPROB_TOL = 1e-3
SHARES_TOL = 1e-4
MIN_PYTHON = (3, 11)

Say = Callable[[str], None]


@dataclass
class Item:
    """One line of the doctor's table. `status` is ok, warn (works, but worth knowing) or fail
    (flowtui may be wrong or unusable: doctor exits 1); `failures` name each failed check."""

    section: str
    name: str
    status: str
    detail: str
    seconds: float | None = None
    failures: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Item:
        return cls(section=str(d["section"]), name=str(d["name"]), status=str(d["status"]),
                   detail=str(d.get("detail", "")), seconds=d.get("seconds"),
                   failures=[str(f) for f in d.get("failures") or []],
                   data=dict(d.get("data") or {}))


def failures(items: Iterable[Item]) -> list[str]:
    """One line per failed item, naming it and its first failed check: `aya_vision: sweep log
    p at K=2 is -5.42, the eager reference -14.04 (+3 more)` (the item lists them all)."""
    return [f"{it.name}: {it.detail}" for it in items if it.status == FAIL]


# --- environment --------------------------------------------------------------------------------
def python_item() -> Item:
    v = sys.version_info
    ok = (v.major, v.minor) >= MIN_PYTHON
    detail = f"{platform.python_version()} ({sys.executable})"
    if not ok:
        detail += f"; flowtui needs {'.'.join(map(str, MIN_PYTHON))}+"
    return Item("python", "python", OK if ok else FAIL, detail)


def flowtui_item() -> Item:
    import flowtui

    return Item("python", "flowtui", OK, f"{__version__} ({Path(flowtui.__file__).parent})")


def package_items() -> list[Item]:
    """Each tested package against its range (flowtui.versions); torch's build as well."""
    items = []
    for c in versions.check():
        if c.ok:
            detail = f"{c.installed} (tested {c.range})"
        else:
            detail = c.message
        if c.name == "torch" and c.installed is not None:
            detail += f"; {torch_build()}"
        items.append(Item("packages", c.name, OK if c.ok else FAIL, detail,
                          data={"installed": c.installed, "tested": [c.low, c.high]},
                          failures=[] if c.ok else [c.message]))
    for name, why in (("torchvision", "only some processors' video parts use it"),
                      ("bitsandbytes", "needed for --quantize")):
        have = versions.installed(name)
        items.append(Item("packages", name, OK,
                          have if have else f"not installed (optional: {why})",
                          data={"installed": have}))
    return items


def torch_build() -> str:
    import torch

    if torch.version.cuda:
        return f"CUDA {torch.version.cuda} build"
    if getattr(torch.version, "hip", None):
        return f"ROCm {torch.version.hip} build"
    return "CPU-only build"


def devices_item() -> Item:
    """What `--device auto` would use."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken torch is what the doctor is for
        return Item("torch", "devices", FAIL, f"torch does not import: {_line(exc)}",
                    failures=[f"torch does not import: {_line(exc)}"])
    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}"})
        names = ", ".join(f"cuda:{g['index']} {g['name']} ({g['memory_gib']} GiB)" for g in gpus)
        # What --dtype auto picks on cuda:0 (loading.resolve_placement).
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return Item("torch", "devices", OK, f"{len(gpus)} GPU(s): {names}; --device auto: "
                    f"cuda:0, {dtype}", data={"cuda": True, "gpus": gpus, "auto_dtype": dtype})
    why = "torch is a CPU-only build" if not torch.version.cuda else \
        "torch has CUDA, but no GPU is visible (driver, CUDA_VISIBLE_DEVICES?)"
    status = WARN if torch.version.cuda and _nvidia_present() else OK
    return Item("torch", "devices", status, f"CPU only ({why}); {torch.get_num_threads()} threads",
                data={"cuda": False, "gpus": []})


def _nvidia_present() -> bool:
    """An NVIDIA driver on the machine while torch sees no GPU is worth a warning."""
    return Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi") is not None


def ssh_item() -> Item:
    """The client `--remote` runs: $FLOWTUI_SSH_COMMAND or `ssh`."""
    command = os.environ.get("FLOWTUI_SSH_COMMAND") or "ssh"
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return Item("remote", "ssh", FAIL, f"FLOWTUI_SSH_COMMAND cannot be parsed: {exc}",
                    failures=[f"FLOWTUI_SSH_COMMAND cannot be parsed: {exc}"])
    found = shutil.which(argv[0]) if argv else None
    if not found:
        return Item("remote", "ssh", WARN, f"{argv[0] if argv else command!r} not found: --remote "
                    "needs OpenSSH's client (or set FLOWTUI_SSH_COMMAND)")
    try:
        out = subprocess.run([found, "-V"], capture_output=True, text=True, timeout=10)
        version = _line((out.stderr or out.stdout).strip()) or f"exit code {out.returncode}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        version = f"`{argv[0]} -V` failed: {_line(exc)}"
    via = " (FLOWTUI_SSH_COMMAND)" if os.environ.get("FLOWTUI_SSH_COMMAND") else ""
    return Item("remote", "ssh", OK, f"{found}{via}: {version}", data={"path": found})


def daemon_item() -> Item:
    """Where `flowtui serve --daemon` puts its socket, and whether a daemon of yours answers."""
    from flowtui.remote.server import default_socket_path

    path = default_socket_path()
    data: dict[str, Any] = {"socket": str(path)}
    folder = path.parent
    if not os.environ.get("FLOWTUI_SOCKET") and folder.exists():
        st = folder.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            msg = (f"{folder} is not a private folder of yours (mode 700): `serve --daemon` "
                   "refuses to put its socket there")
            return Item("remote", "daemon", FAIL, msg, data=data, failures=[msg])
    try:
        st = path.lstat()
    except OSError:
        return Item("remote", "daemon", OK, f"none running (its socket would be {path}; "
                    "`flowtui serve --daemon` keeps models loaded)", data=data)
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        msg = f"{path} is not a socket owned by you with mode 600: sessions ignore it"
        return Item("remote", "daemon", WARN, msg, data=data)
    hello = _daemon_hello(path)
    if hello is None:
        return Item("remote", "daemon", WARN, f"{path} is stale (no daemon answers); the next "
                    "`serve --daemon` replaces it", data=data)
    data.update({k: hello.get(k) for k in ("pid", "flowtui", "protocol")})
    from flowtui.remote.protocol import PROTOCOL

    if hello.get("protocol") != PROTOCOL:
        msg = (f"the daemon at {path} (pid {hello.get('pid')}) runs flowtui {hello.get('flowtui')} "
               f"(protocol {hello.get('protocol')}), this is {__version__} (protocol {PROTOCOL}): "
               "restart it")
        return Item("remote", "daemon", FAIL, msg, data=data, failures=[msg])
    return Item("remote", "daemon", OK, f"pid {hello.get('pid')}, flowtui {hello.get('flowtui')}, "
                f"listening on {path}", data=data)


def _daemon_hello(path: Path, timeout: float = 5.0) -> dict[str, Any] | None:
    """The daemon's hello frame (it greets every connection), or None if nobody answers."""
    from flowtui.remote.protocol import FrameReader

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        with sock.makefile("rb") as f:
            frame = FrameReader(f).read()
        return frame.header if frame is not None and frame.type == "hello" else None
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


def internals_items() -> list[Item]:
    """Each transformers internal flowtui relies on (flowtui.engine.compat), probed by name."""
    try:
        from flowtui.engine import compat
    except Exception as exc:  # noqa: BLE001 - an import that breaks is itself the finding
        msg = f"flowtui.engine.compat does not import: {_line(exc)}"
        return [Item("transformers internals", "compat", FAIL, msg, failures=[msg])]
    items = []
    for probe in compat.probes():
        msg = f"transformers changed it: {probe.detail}"
        items.append(Item("transformers internals", probe.name, OK if probe.ok else FAIL,
                          "as flowtui expects" if probe.ok else msg,
                          failures=[] if probe.ok else [msg]))
    return items


def environment_items() -> list[Item]:
    """The quick checks, in table order (the CLI adds the terminal's colours)."""
    return [python_item(), flowtui_item(), *package_items(), devices_item(),
            *internals_items(), ssh_item(), daemon_item()]


# --- self-test ----------------------------------------------------------------------------------
def families() -> list[str]:
    """The families with a tiny model, sorted."""
    from flowtui.selftest import tiny

    return sorted(tiny.discover())


def sample_image(size: tuple[int, int], seed: int = 5):
    """Smooth blobs, not noise: resampling then changes little, and answers depend on content
    (the image tests/engine/test_families.py uses)."""
    import numpy as np
    from PIL import Image

    w, h = size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)


def selftest(names: Iterable[str] | None = None, say: Say | None = None) -> list[Item]:
    """One Item per family: build its tiny model, analyse and sweep through flowtui's public
    path, and compare with the eager references. Never raises for a family's failure."""
    from flowtui.selftest import tiny

    found = tiny.discover()
    chosen = sorted(found) if names is None else list(names)
    unknown = [n for n in chosen if n not in found]
    if unknown:
        raise ValueError(f"no tiny model for {', '.join(unknown)}; known: {', '.join(sorted(found))}")
    items = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flowtui-doctor-") as tmp:
        for i, name in enumerate(chosen, 1):
            def step(what: str, name: str = name, i: int = i) -> None:
                if say is not None:
                    say(f"[{time.perf_counter() - start:6.1f}s] self-test {i}/{len(chosen)} "
                        f"{name}: {what}")

            items.append(family_item(name, found[name], Path(tmp) / name, step))
    return items


def family_item(name: str, spec: ModuleType, folder: Path, step: Say) -> Item:
    """Self-test one family (its tiny module `spec`, built in `folder`)."""
    t0 = time.perf_counter()
    data: dict[str, Any] = {}
    try:
        fails = _family_checks(spec, folder, step, data)
    except Exception as exc:  # noqa: BLE001 - one family failing must not hide the others
        fails = [f"{data.get('stage', 'self-test')} failed: {type(exc).__name__}: {_line(exc)}"]
    seconds = round(time.perf_counter() - t0, 2)
    data.pop("stage", None)
    if fails:
        return Item("self-test", name, FAIL, fails[0] + (f" (+{len(fails) - 1} more)"
                    if len(fails) > 1 else ""), seconds, fails, data)
    detail = (f"answer {data['answer']!r}; sweep K=0..{data['layers']} matches the eager reference "
              f"(max |Δ log p| {data['max_logprob_error']:.1e}); shares "
              f"(max |Δ| {data['max_share_error']:.1e}); cliff {data['cliff']}; "
              f"{len(data['self_checks'])} self-checks passed")
    return Item("self-test", name, OK, detail, seconds, [], data)


def _family_checks(spec: ModuleType, folder: Path, step: Say, data: dict[str, Any]) -> list[str]:
    """The failed checks of one family (empty when all agree); fills `data` with numbers."""
    import numpy as np

    import flowtui
    from flowtui.selftest.reference import MaskedEager, eos_token_ids, shares_eager

    with warnings.catch_warnings():
        # transformers' deprecation notes are not the user's business here.
        warnings.simplefilter("ignore")
        data["stage"] = "build"
        step("build")
        path = spec.build(folder)
        data["stage"] = "load"
        step("load")
        engine = flowtui.load_engine(str(path), device="cpu", dtype="float32")
        fails = []
        if engine.info.family != spec.FAMILY:
            fails.append(f"loaded as family {engine.info.family!r}, not {spec.FAMILY!r}")
        data["stage"] = "analysis"
        step("analyse")
        a = engine.analyze(sample_image(spec.IMAGE_SIZE), spec.QUESTION,
                           max_new_tokens=getattr(spec, "MAX_NEW_TOKENS", 4))
        data.update(answer=a.answer, layers=a.num_layers)
        # The engine's own self-checks of this analysis (flowtui.engine.selfcheck).
        checked = list(getattr(a, "checks", None) or [])
        data["self_checks"] = {c.name: bool(c.passed) for c in checked}
        fails += [f"self-check failed: {c.describe()}" for c in checked if not c.passed]
        data["stage"] = "sweep"
        step("sweep")
        sweep = engine.sweep(a)
        data["stage"] = "reference"
        step(f"eager reference, K=0..{a.num_layers}")
        ref = MaskedEager(path)
        eos = eos_token_ids(ref.model, ref.processor.tokenizer)
        sames, worst = [], 0.0
        for K in range(a.num_layers + 1):
            expect, lp = ref.greedy_and_logprob(a, K, a.image_positions, a.max_new_tokens, eos)
            text = ref.processor.tokenizer.decode(expect, skip_special_tokens=True).strip()
            if sweep.answers[K] != text:
                fails.append(f"sweep answer at K={K} is {sweep.answers[K]!r}, the eager "
                             f"reference {text!r}")
            sames.append(expect == list(a.answer_token_ids))
            err = abs(float(sweep.logprob[K]) - lp)
            worst = max(worst, err if np.isfinite(err) else float("inf"))
            if not err <= LOGPROB_TOL:
                fails.append(f"sweep log p at K={K} is {float(sweep.logprob[K]):.2f}, the eager "
                             f"reference {lp:.2f}")
        if [bool(s) for s in sweep.same] != sames:
            fails.append(f"sweep 'same answer' flags {[bool(s) for s in sweep.same]}, the eager "
                         f"reference {sames}")
        # DESIGN.md: the smallest K from which every K' >= K keeps the baseline answer.
        cliff = next((k for k in range(len(sames)) if all(sames[k:])), None)
        if sweep.cliff_layer != cliff:
            fails.append(f"cliff layer {sweep.cliff_layer}, by its definition {cliff}")
        data.update(max_logprob_error=worst, cliff=sweep.cliff_layer)
        data["stage"] = "shares"
        step("shares against eager output_attentions")
        shares, _ = shares_eager(path, a)
        share_err = float(np.abs(np.asarray(a.shares, dtype=np.float64) - shares).max())
        data["max_share_error"] = share_err
        if not share_err <= SHARES_TOL:
            layer = int(np.abs(a.shares - shares).max(axis=1).argmax())
            fails.append(f"shares at layer {layer} are {np.round(a.shares[layer], 4).tolist()}, "
                         f"eager output_attentions {np.round(shares[layer], 4).tolist()}")
        return fails


def _line(exc: object) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
