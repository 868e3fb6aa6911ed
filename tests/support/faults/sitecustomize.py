"""A fault injected into the installed transformers, for subprocess tests: put this folder on
PYTHONPATH and every DynamicCache layer returns corrupted values (what a broken cache release
would do without raising)."""

import transformers.cache_utils as _cu

_original = _cu.DynamicLayer.update


def _corrupt(self, key_states, value_states, *args, **kwargs):
    keys, values = _original(self, key_states, value_states, *args, **kwargs)
    return keys, values * 1.5


_cu.DynamicLayer.update = _corrupt
