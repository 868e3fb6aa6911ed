"""Finding and loading a model: a local folder, a hub id from the local cache, or the built-in toy.

Nothing here touches the network: hub ids resolve only from the local Hugging Face cache.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowtui.engine.errors import InputError, ModelLoadError, first_line

if TYPE_CHECKING:
    import torch

# torch is imported only where a model is placed or loaded (or a GPU is named): checking the
# options, and the explorer's first paint, must not wait the seconds importing it takes.
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
DTYPES = {"auto": None, "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu", "cuda:0", ... or "auto" (accelerate spreads it)
    dtype: torch.dtype
    device_map: str | None


def quiet_transformers() -> None:
    """Keep transformers' own progress bars and advisory warnings off the user's terminal."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")


def check_placement(device: str = "auto", dtype: str = "auto") -> None:
    """Refuse a bad --device/--dtype as resolve_placement would, importing torch only where a
    GPU is named (only torch can say whether it is there): `auto` and `cpu` always place."""
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    if device in ("auto", "cpu"):
        return
    if device == "cuda" or device.startswith("cuda:"):
        resolve_placement(device, dtype)
        return
    raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def resolve_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    """Turn the user's --device/--dtype into a placement, or raise InputError."""
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    import torch

    cuda = torch.cuda.is_available()
    device_map = None
    if device == "auto":
        if cuda:
            # accelerate puts a model that fits on GPU 0 and spreads one that does not.
            device, device_map = "cuda:0", "auto"
        else:
            device = "cpu"
    elif device == "cpu":
        pass
    elif device == "cuda" or device.startswith("cuda:"):
        if not cuda:
            raise InputError(f"device {device!r} asked for, but no CUDA GPU is visible")
        index = device.partition(":")[2] or "0"
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise InputError(
                f"no GPU {device!r}: {torch.cuda.device_count()} visible (cuda:0..cuda:"
                f"{torch.cuda.device_count() - 1})"
            )
        device = f"cuda:{index}"
    else:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if (dtype_name := DTYPES[dtype]) is not None:
        torch_dtype = getattr(torch, dtype_name)
    elif device.startswith("cuda"):
        torch_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        torch_dtype = torch.float32
    return Placement(device=device, dtype=torch_dtype, device_map=device_map)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not name.startswith((".", "/", "~"))
        and not os.path.sep == "\\"
    )


TOY_NAME = "flowtui-toy"


def resolve_model_path(model: str | Path | None) -> tuple[Path, str]:
    """Return (local folder, display name) for a folder, a cached hub id, or the built-in toy
    (None or its name, `flowtui-toy`, unless a folder of that name exists here)."""
    if model is None or (str(model) == TOY_NAME and not Path(TOY_NAME).exists()):
        # The toy's weights ship inside the package: found by path, not by importing the toy.
        weights = Path(__file__).resolve().parent.parent / "toy" / "weights"
        if not (weights / "config.json").exists():
            raise ModelLoadError(
                f"the built-in toy model is missing from {weights}; reinstall flowtui or "
                "retrain it with `python -m flowtui.toy.train`"
            )
        return weights, TOY_NAME
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file; --model takes a model folder or a hub id")
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is not a transformers model folder (no config.json)")
        return path, path.name
    name = str(model)
    if not _looks_like_hub_id(name):
        raise ModelLoadError(f"model folder not found: {name}")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(name, local_files_only=True)
    except Exception:
        raise ModelLoadError(
            f"{name} is not in the local Hugging Face cache and flowtui never downloads at run "
            f"time; run `hf download {name}` on a machine with access, or pass a local folder"
        ) from None
    return Path(local), name


def read_model_type(path: Path) -> str:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}/config.json is unreadable: {exc}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelLoadError(f"{path}/config.json names no model_type; not a transformers model")
    return str(config["model_type"])


def _value_error(path: Path, exc: Exception) -> str:
    msg = first_line(exc, None)
    if "trust_remote_code" in msg:
        return f"cannot load {path}: this model needs custom code; pass --trust-remote-code if you trust it"
    return f"cannot load {path}: {msg}"


def _unless_remote_code(path: Path, exc: Exception, message: str) -> str:
    """`message`, unless the failure is transformers asking for the model's own code."""
    return _value_error(path, exc) if "trust_remote_code" in str(exc) else message


# Words in the errors transformers, safetensors and torch raise for damaged or missing weights.
_WEIGHT_WORDS = ("safetensor", "deserializ", "no file named", "checkpoint", "shard", "eof",
                 "pytorchstreamreader", "zip archive", "size mismatch", "incomplete", "truncat")


def _weights_error(path: Path, exc: Exception) -> str:
    text = f"{type(exc).__name__} {exc}".lower()
    if any(w in text for w in _WEIGHT_WORDS):
        return f"the weights in {path} are corrupt or incomplete ({first_line(exc, None)})"
    if "validation" in text or "config" in text:
        return f"the config in {path} is invalid ({type(exc).__name__}: {first_line(exc, None)})"
    return f"cannot load {path}: {type(exc).__name__}: {first_line(exc, None)}"


def load_model(
    path: Path,
    placement: Placement,
    trust_remote_code: bool = False,
    quantize: str | None = None,
    model_type: str | None = None,
) -> tuple[Any, Any]:
    """Load (model, processor) from a local folder, or raise ModelLoadError with one line."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from flowtui.engine import attention
    from flowtui.engine.processors import load_processor

    quiet_transformers()
    attention.register()
    kwargs: dict[str, Any] = {"dtype": placement.dtype, "trust_remote_code": trust_remote_code}
    kwargs["local_files_only"] = True
    if quantize:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ModelLoadError(
                f"--quantize {quantize} needs bitsandbytes: pip install 'flowtui[quant]'"
            ) from None
        from transformers import BitsAndBytesConfig

        bits = {"4bit": {"load_in_4bit": True}, "8bit": {"load_in_8bit": True}}[quantize]
        kwargs["quantization_config"] = BitsAndBytesConfig(**bits)
        kwargs["device_map"] = placement.device_map or placement.device
    elif placement.device_map:
        kwargs["device_map"] = placement.device_map
    try:
        # Read once, checked here and handed to the model (not parsed a second time).
        kwargs["config"] = AutoConfig.from_pretrained(
            path, trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is the folder's, not a bug
        raise ModelLoadError(_unless_remote_code(path, exc, (
            f"the config in {path} is invalid ({type(exc).__name__}: {first_line(exc, None)})"
        ))) from None
    try:
        processor = load_processor(path, model_type or "", trust_remote_code)
    except ImportError as exc:
        if "torchvision" in str(exc).lower():
            raise ModelLoadError(
                f"cannot load {path}: its processor needs torchvision even for images "
                f"({first_line(exc, None)}); install torchvision where a build exists for this machine"
            ) from None
        raise ModelLoadError(f"cannot load {path}: {first_line(exc, None)}") from None
    except Exception as exc:  # noqa: BLE001 - any failure here is the folder's, not a bug
        raise ModelLoadError(_unless_remote_code(path, exc, (
            f"the tokenizer or processor files in {path} are missing or unreadable "
            f"({first_line(exc, None)})"
        ))) from None
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except ValueError as exc:
        raise ModelLoadError(_value_error(path, exc)) from None
    except Exception as exc:  # noqa: BLE001 - any failure here is the folder's, not a bug
        raise ModelLoadError(_weights_error(path, exc)) from None
    if "device_map" not in kwargs:
        # transformers wraps `to` with functools.wraps, which mypy types as an unbound method
        model = model.to(placement.device)  # type: ignore[arg-type]
    model.eval()
    model.requires_grad_(False)  # CAM needs activation gradients only, never parameter ones
    return model, processor
