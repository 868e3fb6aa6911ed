"""The built-in toy LVLM: a tiny trained LlavaForConditionalGeneration on shape scenes.

``WEIGHTS_DIR`` holds the model and processor saved with ``save_pretrained``; flowtui
loads it like any other model. ``scenes`` renders scenes and questions,
``python -m flowtui.toy.train`` retrains it, ``python -m flowtui.toy.evaluate`` measures it.
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"

__all__ = ["WEIGHTS_DIR"]
