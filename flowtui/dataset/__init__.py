"""Dataset runs: truncation sweeps over a whole VQA or caption dataset (the paper's Fig. 5).

Plain Python, no UI: readers (`readers`), scoring rules (`scoring`), the run loop over the
Engine interface with one file per process (`runner`, `dist`), the results folder (`results`),
curves with 95% intervals and the dataset cliff (`summary`), plots (`plots`) and provenance.

    from flowtui.dataset import score
    score("vqa", "three", ["3"] * 3 + ["4"] * 7)   # 0.9: the official VQA accuracy
    from flowtui.dataset.readers import open_dataset
    from flowtui.dataset.runner import run_dataset, finalize
"""

from __future__ import annotations

from typing import Any

__all__ = ["score"]


def score(rule: str, answer: str, reference: Any) -> float:
    """Score `answer` against `reference` under the scoring rule named `rule` (pope,
    pope-first-word, pope-negation, exact, vqa, choice, same), in [0, 1]. Raises
    `flowtui.dataset.scoring.UnknownRuleError` for an unknown rule and `LabelError` for a
    reference the rule cannot score, both ValueErrors. See `flowtui.dataset.scoring.score`."""
    # Imported here so that `import flowtui.dataset` stays cheap.
    from flowtui.dataset.scoring import score as _score

    return _score(rule, answer, reference)
