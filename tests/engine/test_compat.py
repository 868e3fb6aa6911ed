"""Every transformers internal flowtui relies on, checked by name on the installed release.

A failure here names the internal that changed (the probe's name and what it found), before
any family test fails for a reason that is harder to read.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from flowtui import versions
from flowtui.engine import compat


@pytest.mark.parametrize("probe", compat.probes(), ids=lambda p: p.name)
def test_internal_is_as_flowtui_expects(probe):
    assert probe.ok, f"transformers changed {probe.name}: {probe.detail}"


def test_a_probe_that_finds_a_change_says_so():
    bad = compat._probe("x", lambda: compat._check(False, "DynamicCache.update moved"))
    assert not bad.ok and bad.detail == "AssertionError: DynamicCache.update moved"


def test_the_cache_argument_is_the_one_the_decoder_takes_without_warning():
    model = LlamaModel(LlamaConfig(num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, hidden_size=8, intermediate_size=8,
                                   vocab_size=8))
    name = compat.cache_kwarg(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecated name warns: caught here as an error
        out = model(input_ids=torch.tensor([[1, 2]]), use_cache=True,
                    **{name: compat.new_cache(model.config)})
    assert out[0].shape == (1, 2, 8)


def test_installed_transformers_is_a_tested_one():
    """The suite runs on both ends of the tested range (.ci/run); anything else is a release
    nobody tested, which flowtui would warn about at start-up."""
    (check,) = versions.check(("transformers",))
    assert check.ok, check.message
