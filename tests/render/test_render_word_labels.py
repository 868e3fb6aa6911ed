"""The words display's layout (render/word_labels.py): word areas against a flood fill written
independently here, the label's run, and fitting a word to its run."""

from __future__ import annotations

from collections import Counter, deque

import numpy as np
from rich.cells import cell_len

from flowtui.render.word_labels import MIN_CELLS, fit_label, word_areas


def flood_areas(owner: np.ndarray, top: np.ndarray) -> list[tuple[int, frozenset]]:
    """(word, tokens) of each 4-connected same-word area, by breadth-first search."""
    rows, cols = owner.shape
    words = np.where(owner >= 0, top[np.maximum(owner, 0)], -1)
    seen = np.zeros(owner.shape, dtype=bool)
    out = []
    for r in range(rows):
        for c in range(cols):
            if seen[r, c] or words[r, c] < 0:
                continue
            w, cells, queue = words[r, c], [], deque([(r, c)])
            seen[r, c] = True
            while queue:
                y, x = queue.popleft()
                cells.append((y, x))
                for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= ny < rows and 0 <= nx < cols and not seen[ny, nx] \
                            and words[ny, nx] == w:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
            toks = frozenset(int(owner[y, x]) for y, x in cells)
            out.append((int(w), toks))
    return out


def test_neighbours_with_one_word_share_an_area_and_a_lone_token_has_its_own():
    # Five tokens two cells wide in two rows; tokens 0 and 1 read word 7, 2 and 3 word 8, and 4
    # reads 7 again but touches 0-1 nowhere.
    owner = np.repeat(np.arange(5), 2)[None, :].repeat(2, axis=0)
    areas = word_areas(owner, np.array([7, 7, 8, 8, 7]))
    got = {(a.word_id, tuple(a.tokens.tolist()), a.width) for a in areas}
    assert got == {(7, (0, 1), 4), (8, (2, 3), 4), (7, (4,), 2)}
    assert all(a.row == 0 for a in areas)  # equally wide rows: the first of the middle two
    assert [a.col for a in areas] == [0, 4, 8]


def test_an_area_joins_through_rows_and_labels_its_widest_run():
    # An L: token 0 down the left (rows 0-2), token 1 along the bottom row; both read word 3.
    owner = np.array([[0, -1, -1, -1, -1, 2],
                      [0, -1, -1, -1, -1, 2],
                      [0, 1, 1, 1, 1, 2]])
    areas = word_areas(owner, np.array([3, 3, 5]))
    by_word = {a.word_id: a for a in areas}
    assert by_word[3].tokens.tolist() == [0, 1]
    assert (by_word[3].row, by_word[3].col, by_word[3].width) == (2, 0, 5)
    assert by_word[5].tokens.tolist() == [2] and by_word[5].width == 1
    assert areas[0].word_id == 3  # the larger area first


def test_areas_match_a_flood_fill_on_random_maps():
    rng = np.random.default_rng(0)
    for _ in range(40):
        rows, cols, n = rng.integers(1, 9), rng.integers(1, 15), rng.integers(1, 12)
        owner = rng.integers(-1, n, size=(rows, cols))
        top = rng.integers(0, 3, size=n)
        areas = word_areas(owner, top)
        words = np.where(owner >= 0, top[np.maximum(owner, 0)], -1)
        got: Counter = Counter()
        for a in areas:
            # The label's run lies in the area: the same word over all its cells.
            assert (words[a.row, a.col:a.col + a.width] == a.word_id).all()
            got[(a.word_id, frozenset(a.tokens.tolist()))] += 1
        assert got == Counter(flood_areas(owner, top))


def test_no_tokens_no_areas():
    assert word_areas(np.full((3, 4), -1), np.zeros(0, dtype=np.int64)) == []


def test_fit_label_takes_the_first_form_that_fits_then_cuts_then_gives_up():
    assert fit_label(["circle L5", "circle"], 12) == "circle L5"
    assert fit_label(["circle L5", "circle"], 7) == "circle"
    assert fit_label(["circle L5", "circle"], 5) == "circ…"
    assert fit_label(["circle"], MIN_CELLS - 1) is None
    # Wide characters take two cells each: measured as the terminal draws them.
    assert fit_label(["円形"], 4, cell_len) == "円形"
    assert fit_label(["円形円形"], 5, cell_len) == "円形…"
