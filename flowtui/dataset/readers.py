"""Dataset readers: POPE JSON lines, generic JSON lines / JSON / CSV / Parquet, and a Hugging Face
`datasets` dataset saved with `save_to_disk`. All local; nothing is downloaded.

Every reader yields `Row`s by position. A row that cannot be used (a malformed JSON line, an empty
question, a missing image value) carries an `error` instead of failing the whole file: the run
records it as that sample's error. Whole-file problems (a missing file, no rows, a column that no
row has) are an InputError, one line.

JSON lines and CSV are read with the standard library, line by line, so one bad line costs one
sample and every CSV cell stays the exact string it was (ids like `0007`); Parquet and
`save_to_disk` folders go through `datasets` (Arrow, memory-mapped), which also decodes its
`Image` feature (embedded bytes or paths).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowtui.engine.errors import InputError, first_line

FORMATS = ("auto", "pope", "jsonl", "json", "csv", "parquet", "hf")
POPE_KEYS = ("question_id", "image", "text", "label")
# Column names tried in order when none is given.
GUESSES: dict[str, tuple[str, ...]] = {
    "image": ("image", "image_path", "img", "image_file", "file_name", "filename", "path"),
    "question": ("question", "text", "prompt", "query", "instruction"),
    "answer": ("answer", "answers", "label", "gt_answer", "ground_truth", "target"),
    "id": ("question_id", "id", "qid", "sample_id", "uid"),
    # The asked object's box [x0, y0, x1, y1] in the image's pixels (only --lens reads it).
    "region": ("region", "bbox", "box"),
}


@dataclass
class Columns:
    """Which column holds what. `answer` and `id` may be None (then: no labels / the row index)."""

    image: str
    question: str
    answer: str | None = None
    id: str | None = None
    region: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        out = {"image": self.image, "question": self.question, "answer": self.answer,
               "id": self.id}
        if self.region is not None:  # absent, a run's config reads as before regions existed
            out["region"] = self.region
        return out


@dataclass
class Row:
    """One sample as read. `image` is a resolved path or a PIL image (embedded bytes);
    `image_label` is how records name it. `error` is set when the row cannot be used."""

    index: int
    id: str
    question: str | None
    reference: Any
    image: Any = None
    image_label: str = ""
    error: str | None = None
    # The asked object's box (x0, y0, x1, y1) in the original image's pixels, where given.
    region: tuple[float, float, float, float] | None = None


@dataclass
class DatasetSource:
    """A readable dataset: `len(source)` rows, `source.row(i)` for any 0 <= i < len."""

    path: Path
    format: str
    columns: Columns
    images: Path | None
    split: str | None = None
    available: list[str] = field(default_factory=list)
    _rows: Sequence[Any] = field(default_factory=list, repr=False)
    _hf: Any = field(default=None, repr=False)
    # --coco-instances: image file name (or COCO id) -> its objects, the rows' references.
    object_table: dict[str, list[str]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self._hf) if self._hf is not None else len(self._rows)

    def describe(self) -> dict[str, Any]:
        """What identifies the data in config.json (the hash is added by the caller)."""
        return {"path": str(self.path), "format": self.format, "columns": self.columns.as_dict(),
                "images": str(self.images) if self.images else None, "split": self.split,
                "rows": len(self)}

    def _raw(self, i: int) -> dict[str, Any] | str:
        if self._hf is not None:
            return self._hf[i]
        return self._rows[i]

    def row(self, i: int) -> Row:
        raw = self._raw(i)
        if isinstance(raw, str):  # a line that did not parse: its error message
            return Row(i, str(i), None, None, error=raw)
        c = self.columns
        sid = raw.get(c.id) if c.id else None
        row = Row(i, str(i) if sid is None else str(sid), None, raw.get(c.answer) if c.answer
                  else None)
        question = raw.get(c.question)
        if not isinstance(question, str) or not question.strip():
            row.error = f"empty question in column {c.question!r}"
        else:
            row.question = question.strip()
        image = raw.get(c.image)
        try:
            row.image, row.image_label = self._image(image)
        except InputError as exc:
            row.error = row.error or str(exc)
        if c.region is not None and raw.get(c.region) is not None:
            row.region = _box(raw.get(c.region))
            if row.region is None:
                row.error = row.error or (f"bad region in column {c.region!r}: want "
                                          "[x0, y0, x1, y1] with x0 < x1 and y0 < y1")
        if self.object_table is not None and not row.error:
            row.reference = coco_lookup(self.object_table, row.image_label)
            if row.reference is None:
                row.error = f"image {row.image_label} is not in the COCO instance annotations"
        return row

    def _resolve(self, name: str) -> Path:
        p = Path(name).expanduser()
        if p.is_absolute():
            return p
        base = self.images or (self.path.parent if self.path.is_file() else self.path)
        return base / p

    def _image(self, value: Any) -> tuple[Any, str]:
        from PIL import Image

        if isinstance(value, Image.Image):
            return value, "<embedded>"
        if isinstance(value, dict):  # datasets' Image(decode=False): bytes and/or path
            if value.get("bytes"):
                label = str(value.get("path") or "<embedded>")
                try:
                    return Image.open(io.BytesIO(value["bytes"])), label
                except Exception:  # noqa: BLE001 - PIL raises several kinds
                    raise InputError(f"embedded image {label} is unreadable") from None
            value = value.get("path")
        if isinstance(value, str) and value.strip():
            return str(self._resolve(value.strip())), value.strip()
        raise InputError(f"no image in column {self.columns.image!r}")


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, in sorted order)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def detect_format(path: Path) -> str:
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if names & {"dataset_info.json", "state.json", "dataset_dict.json"}:
            return "hf"
        raise InputError(f"{path} is a folder but not a `datasets` save_to_disk folder")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise InputError(f"cannot tell the format of {path.name}; pass --format "
                     f"({', '.join(FORMATS[1:])})")


def _json_lines(text: str) -> list[dict[str, Any] | str]:
    rows: list[dict[str, Any] | str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            # int() past Python's digit limit raises a plain ValueError, which has no msg
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else exc
            rows.append(f"line {n} is not valid JSON ({why})")
            continue
        rows.append(obj if isinstance(obj, dict) else f"line {n} is not a JSON object")
    return rows


def _read_json(path: Path) -> list[dict[str, Any] | str]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except ValueError:
        return _json_lines(text)  # POPE ships JSON lines named .json
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if "data" in data and isinstance(data["data"], list):
            data = data["data"]
        elif len(lists) == 1:
            data = lists[0]
        else:
            raise InputError(f"{path.name}: a JSON object with no single list of rows; give a "
                             "JSON array of objects or JSON lines")
    if not isinstance(data, list):
        raise InputError(f"{path.name}: expected a JSON array of objects")
    return [r if isinstance(r, dict) else f"row {i} is not a JSON object"
            for i, r in enumerate(data)]


def _read_csv(path: Path) -> list[dict[str, Any] | str]:
    text = path.read_text(encoding="utf-8-sig")
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    reader = csv.reader(io.StringIO(text, newline=""), dialect=dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path.name} is empty") from None
    except csv.Error as exc:
        raise InputError(f"{path.name}: unreadable CSV header ({exc})") from None
    rows: list[dict[str, Any] | str] = []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows.append(f"CSV line {reader.line_num} is malformed ({exc})")
            continue
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            rows.append(f"CSV line {reader.line_num} has {len(cells)} fields, the header "
                        f"{len(header)}")
            continue
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def _read_hf(path: Path, fmt: str, split: str | None) -> tuple[Any, str | None]:
    import datasets

    datasets.disable_progress_bars()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, memory_map=True)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
            raise InputError(f"{path.name} is not a readable Parquet file: "
                             f"{first_line(exc, None)}") from None
        return datasets.Dataset(table), None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path} is not a readable save_to_disk folder: "
                         f"{first_line(exc, None)}") from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        if split is None and len(names) == 1:
            split = names[0]
        if split not in ds:
            raise InputError(f"{path.name} holds splits {', '.join(names)}; choose one with "
                             "--split")
        ds = ds[split]
    elif split is not None:
        raise InputError(f"{path.name} is a single dataset; it has no split {split!r}")
    return ds, split


def _box(value: Any) -> tuple[float, float, float, float] | None:
    """[x0, y0, x1, y1] (a list, or a JSON string of one, as CSV cells hold it) -> a box; None
    where it is not four finite numbers with x0 < x1 and y0 < y1."""
    import math

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[0] >= box[2] \
            or box[1] >= box[3]:
        return None
    return box


def _pick(name: str | None, role: str, available: list[str], required: bool) -> str | None:
    if name is not None:
        if name not in available:
            raise InputError(f"no column {name!r} for the {role}; columns: {', '.join(available)}")
        return name
    for guess in GUESSES[role]:
        if guess in available:
            return guess
    if required:
        raise InputError(f"no {role} column found (tried {', '.join(GUESSES[role])}); pass "
                         f"--{role}-column; columns: {', '.join(available) or 'none'}")
    return None


def open_dataset(
    path: str | Path,
    fmt: str = "auto",
    images: str | Path | None = None,
    image_column: str | None = None,
    question_column: str | None = None,
    answer_column: str | None = None,
    id_column: str | None = None,
    split: str | None = None,
    region_column: str | None = None,
    regions: bool = False,
) -> DatasetSource:
    """Open a local dataset file or folder; raises InputError (one line) on whole-file problems.
    `regions`: also find the column of the asked object's box (guessed unless named)."""
    path = Path(path).expanduser().resolve()
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if not path.exists():
        raise InputError(f"data not found: {path}")
    image_dir = Path(images).expanduser().resolve() if images else None
    if image_dir is not None and not image_dir.is_dir():
        raise InputError(f"--images {image_dir} is not a folder")
    if fmt == "auto":
        fmt = detect_format(path)
    rows: list[Any] = []
    hf = None
    try:
        if fmt in ("pope", "jsonl"):
            rows = _json_lines(path.read_text(encoding="utf-8-sig"))
        elif fmt == "json":
            rows = _read_json(path)
        elif fmt == "csv":
            rows = _read_csv(path)
        else:
            hf, split = _read_hf(path, fmt, split)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if hf is not None:
        available = list(hf.column_names)
        n = len(hf)
    else:
        if rows and all(isinstance(r, str) for r in rows):
            raise InputError(f"{path.name}: no row could be read ({rows[0]})")
        available = sorted({k for r in rows if isinstance(r, dict) for k in r})
        n = len(rows)
    if n == 0:
        raise InputError(f"{path.name} holds no rows")
    if fmt in ("jsonl", "json") and set(POPE_KEYS) <= set(available):
        fmt = "pope"
    if fmt == "pope":
        missing = [k for k in POPE_KEYS if k not in available]
        if missing:
            raise InputError(f"{path.name} is not POPE JSON lines: no {', '.join(missing)} "
                             f"(columns: {', '.join(available)})")
        image_column = image_column or "image"
        question_column = question_column or "text"
        answer_column = answer_column or "label"
        id_column = id_column or "question_id"
    columns = Columns(
        image=_pick(image_column, "image", available, True),  # type: ignore[arg-type]
        question=_pick(question_column, "question", available, True),  # type: ignore[arg-type]
        answer=_pick(answer_column, "answer", available, False),
        id=_pick(id_column, "id", available, False),
        # Looked for only where asked (--lens): a run without it reads its config as before.
        region=_pick(region_column, "region", available, False)
        if regions or region_column else None,
    )
    if hf is not None:
        from datasets import Image as HFImage

        feature = hf.features.get(columns.image)
        if isinstance(feature, HFImage) and feature.decode:
            # Decode ourselves: a broken image is one sample's error, and paths resolve
            # against --images like every other format.
            hf = hf.cast_column(columns.image, HFImage(decode=False))
    return DatasetSource(path, fmt, columns, image_dir, split, available, rows, hf)


_COCO_ID = re.compile(r"(\d+)\.\w+$")


def coco_lookup(table: dict[str, list[str]], image: str) -> list[str] | None:
    """An image's objects by its file name, else by the number at the end of its name
    (COCO_val2014_000000391895.jpg -> 391895)."""
    name = Path(str(image)).name
    if name in table:
        return table[name]
    m = _COCO_ID.search(name)
    return table.get(str(int(m.group(1)))) if m else None
