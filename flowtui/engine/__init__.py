"""The analysis engine: everything that touches the model. Never imports Textual or Rich."""

from __future__ import annotations

from pathlib import Path

from flowtui.engine.analysis import (
    GROUPS,
    Analysis,
    ModelInfo,
    Progress,
    ProgressFn,
    Sweep,
    TruncationRun,
    set_writer,
)
from flowtui.engine.errors import FlowtuiError, InputError, ModelLoadError, SnapshotError
from flowtui.engine.interface import Engine
from flowtui.engine.snapshot import load_snapshot, save_snapshot

# Analysis.save writes through the snapshot module (registered here: see analysis.set_writer).
set_writer(save_snapshot)

__all__ = [
    "GROUPS",
    "Analysis",
    "Engine",
    "FlowtuiError",
    "InputError",
    "ModelInfo",
    "ModelLoadError",
    "Progress",
    "ProgressFn",
    "SnapshotError",
    "Sweep",
    "TruncationRun",
    "load_engine",
    "load_snapshot",
]


def load_engine(
    model: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    quantize: str | None = None,
    progress: ProgressFn | None = None,
) -> Engine:
    """Load a model into an in-process engine.

    model: a local transformers folder, a hub id already in the local cache, or None for the
    built-in toy model. device: auto|cpu|cuda|cuda:N. dtype: auto|float32|bfloat16|float16.
    quantize: None|"4bit"|"8bit" (needs bitsandbytes). Raises FlowtuiError subclasses with a
    one-line message on any problem.
    """
    from flowtui import versions

    versions.warn_untested()  # once per process; the CLI has said it already
    if progress:
        # Said before anything heavy: importing torch and transformers takes seconds.
        progress(Progress("importing", 0, 0, "torch and transformers"))
    from flowtui.engine.families import adapter_class, adapter_for, supported_families
    from flowtui.engine.loading import (
        load_model,
        read_model_type,
        resolve_model_path,
        resolve_placement,
    )
    from flowtui.engine.local import LocalEngine
    from flowtui.engine.notes import QuestionForms

    if quantize not in (None, "4bit", "8bit"):
        raise InputError(f"unknown quantization {quantize!r}; use 4bit or 8bit")
    placement = resolve_placement(device, dtype)
    path, name = resolve_model_path(model)
    model_type = read_model_type(path)
    forms = QuestionForms.read(path)  # before the load: a bad flowtui.json costs no model time
    if adapter_class(model_type) is None:
        raise ModelLoadError(
            f"{name} is a {model_type!r} model, which flowtui does not support; supported: "
            f"{supported_families()}"
        )
    if progress:
        progress(Progress("loading", 0, 1, name))
    loaded, processor = load_model(path, placement, trust_remote_code, quantize, model_type)
    adapter = adapter_for(loaded, processor)
    param = next(loaded.parameters())
    info = ModelInfo(
        name=name,
        family=adapter.family,
        num_layers=adapter.num_layers,
        num_heads=adapter.num_heads,
        dtype=str(param.dtype).removeprefix("torch."),
        device="auto" if placement.device_map else str(param.device),
    )
    if progress:
        progress(Progress("loading", 1, 1, name))
    return LocalEngine(loaded, processor, adapter, info, question_forms=forms)
