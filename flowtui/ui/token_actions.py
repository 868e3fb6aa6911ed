"""The explorer's answer-token cursor (docs/definitions.md, "Per-token quantities"): `.` and `,`
move it through the answer's tokens, every panel following the chosen one; `A` returns to the
whole answer. Mixed into ExplorerScreen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.screen import Screen

from flowtui.engine.analysis import Analysis
from flowtui.ui.state import ViewState, has_token_cursor


class TokenActions(Screen):
    """Token cursor actions (uses the explorer's analysis and view)."""

    analysis: Analysis | None
    view: ViewState
    if TYPE_CHECKING:
        def _set_view(self, **changes: Any) -> None: ...

    def action_answer_token(self, delta: int) -> None:
        """Move the token cursor through the answer; from the whole answer, `delta` > 0 picks
        the first token and < 0 the last."""
        a = self.analysis
        if not has_token_cursor(a):
            return
        T, t = len(a.answer_token_ids), self.view.answer_token
        t = (0 if delta > 0 else T - 1) if t is None else max(0, min(T - 1, t + delta))
        if t != self.view.answer_token:
            self._set_view(answer_token=t)

    def action_whole_answer(self) -> None:
        if self.view.answer_token is not None:
            self._set_view(answer_token=None)
