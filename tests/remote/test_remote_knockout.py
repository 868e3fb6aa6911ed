"""Knockout over the remote protocol: the remote engine's result equals the local one, with the
same progress events; the analysis goes by key or in full; bad flows come back as input errors."""

from __future__ import annotations

import numpy as np
import pytest
from support.images import random_image
from support.remote_util import PipeServer

from flowtui.engine.errors import FlowtuiError


def test_remote_knockout_equals_local(engines):
    served = engines["a"]
    remote = PipeServer(served).engine()
    flows = "image->question,image->last+image->answer"
    out, events = {}, {}
    for name, e in (("local", served), ("remote", remote)):
        a = e.analyze(random_image(6), "Is there a red circle?", max_new_tokens=3)
        log: list = []
        k = e.knockout(a, flows, window=2, progress=log.append)
        assert a.knockout is k
        r = e.knockout(a, "question->last", layers="1:3", greedy=True)
        out[name], events[name] = (k, r), [p for p in log if p.stage == "knockout"]
    (lk, lr), (rk, rr) = out["local"], out["remote"]
    assert rk.flows == lk.flows and rk.window == lk.window == 2
    np.testing.assert_array_equal(rk.rel_change, lk.rel_change)
    np.testing.assert_array_equal(rk.logprob, lk.logprob)
    assert rr.layers == lr.layers == (1, 3) and rr.answers == lr.answers
    assert events["remote"] == events["local"] and len(events["local"]) == 5  # 4 windows + done
    with pytest.raises(FlowtuiError, match="causal order"):
        remote.knockout(a, "last->image")
    remote.close()
