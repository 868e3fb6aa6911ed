"""A dataset run's settings (config.json): what makes two runs the same run, and strategy names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from flowtui.engine.errors import InputError

CONFIG_FORMAT = "flowtui.dataset.run"
CONFIG_VERSION = 1
# The definitions of the scoring rules a run's scores were computed with. 2: `pope` became
# lmms-eval's whole-answer rule (the first-word rule is now `pope-first-word`) and `vqa` the
# official leave-one-out accuracy with EvalAI's processor. A config without it is 1.
SCORING_RULES = 2
# Settings a resumed run may change: --limit extends (or shortens) the set of rows it covers.
MAY_CHANGE = ("limit", "created", "self_check")


@dataclass(frozen=True)
class Strategy:
    """One truncation strategy of a run: `all`, `top:R` (FastV's ranking) or `random:R`."""

    kind: str  # all | top | random
    keep: int | None = None

    @property
    def name(self) -> str:
        return self.kind if self.kind == "all" else f"{self.kind}:{self.keep}"


def parse_strategies(text: str) -> list[Strategy]:
    """'all,top:64,random:64' -> strategies; `all` always comes first (the cliff is defined on
    it), duplicates are dropped."""
    out = [Strategy("all")]
    for part in (p.strip() for p in text.split(",")):
        if not part or part == "all":
            continue
        kind, sep, keep = part.partition(":")
        if kind not in ("top", "random") or not sep:
            raise InputError(f"unknown strategy {part!r}; use all, top:R or random:R")
        if not keep.isdigit():
            raise InputError(f"strategy {part!r}: R must be a non-negative integer")
        s = Strategy(kind, int(keep))
        if s not in out:
            out.append(s)
    return out


@dataclass
class RunConfig:
    """Everything that decides a run's per-sample results. `--resume` refuses a directory whose
    config.json differs in anything but MAY_CHANGE."""

    data: dict[str, Any]  # DatasetSource.describe() plus its sha256
    model: dict[str, Any]  # the --model argument, its resolved path and name, the dtype asked for
    scoring: str
    strategies: list[str]
    seed: int = 0
    max_new_tokens: int = 16
    question_suffix: str = ""
    limit: int | None = None
    snapshots: bool = False
    # The logit lens per sample (docs/definitions.md): per layer, the answer's first token's
    # mean lens probability over the image tokens and over the object's region.
    lens: bool = False
    # Checks what the engine computes; never changes a result (so a resume may switch it).
    self_check: bool = True
    # --scoring chair: {"vocabulary": path or None (COCO's table), "vocabulary_sha256",
    # "objects": the objects column, or "coco_instances": path and "coco_sha256"}.
    chair: dict[str, Any] | None = None
    scoring_rules: int = SCORING_RULES
    format: str = CONFIG_FORMAT
    version: int = CONFIG_VERSION
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RunConfig:
        if obj.get("format") != CONFIG_FORMAT:
            raise InputError("config.json is not a flowtui dataset run")
        if int(obj.get("version", 0)) > CONFIG_VERSION:
            raise InputError(f"config.json is version {obj.get('version')}; this flowtui reads "
                             f"up to {CONFIG_VERSION}: upgrade flowtui")
        known = {k: obj[k] for k in cls.__dataclass_fields__ if k in obj}
        known.setdefault("scoring_rules", 1)  # written before the field: the first definitions
        config = cls(**known)
        if config.scoring_rules < 2 and config.scoring != "vqa":
            # Only pope and vqa changed. An old pope run's scores are the first-word rule's,
            # unchanged under its own name now; an old vqa run keeps 1 (its scores are not the
            # official accuracy: report says so, and resuming it is refused).
            if config.scoring == "pope":
                config.scoring = "pope-first-word"
            config.scoring_rules = SCORING_RULES
        return config

    def strategy_list(self) -> list[Strategy]:
        return parse_strategies(",".join(self.strategies))

    def differences(self, other: RunConfig) -> list[str]:
        """Names of the settings that differ (dotted for nested ones), MAY_CHANGE left out."""
        a, b = self.to_json(), other.to_json()
        diffs = []
        for key in sorted(set(a) | set(b)):
            if key in MAY_CHANGE:
                continue
            va, vb = a.get(key), b.get(key)
            if isinstance(va, dict) and isinstance(vb, dict):
                diffs += [f"{key}.{k}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
            elif va != vb:
                diffs.append(key)
        return diffs
