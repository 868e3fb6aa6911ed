"""The logit lens through the remote engine (in-process pipes): equal to the local engine's,
with progress, for the default word and a typed one; a bad word is one line."""

from __future__ import annotations

import numpy as np
import pytest
from support.images import random_image
from support.remote_util import PipeServer

from flowtui.engine.errors import InputError


def test_remote_lens_equals_local(engines):
    local = engines["a"]
    remote = PipeServer(local).engine()
    image = random_image(5)
    out = {}
    for name, e in (("local", local), ("remote", remote)):
        log = []
        a = e.analyze(image, "Is there a red circle?", max_new_tokens=3)
        lens = e.lens(a, progress=log.append)
        other = e.lens(a, "circle")
        assert a.lens is lens and a.lens is not other
        out[name] = (lens, other, [p.stage for p in log if p.stage == "lens"])
    for mine, theirs in zip(out["local"][:2], out["remote"][:2], strict=True):
        np.testing.assert_array_equal(mine.top_ids, theirs.top_ids)
        np.testing.assert_array_equal(mine.top_probs, theirs.top_probs)
        np.testing.assert_array_equal(mine.word_prob, theirs.word_prob)
        assert (mine.word, mine.word_id, mine.strings) == (theirs.word, theirs.word_id,
                                                            theirs.strings)
    assert out["remote"][2] == out["local"][2] and out["remote"][2]
    with pytest.raises(InputError, match="empty") as err:
        remote.lens(a, "  ")
    assert "\n" not in str(err.value)
