"""Idefics3 as on the hub (Idefics3-8B, SmolVLM v1): SigLIP tower, pixel shuffle connector, the
image resized by its longest edge, rounded up to whole tiles (aspect changes slightly), split
into a rows x cols grid of tiles plus a global image squashed to one tile.

Geometry on purpose: 150x97 -> longest edge 96 -> 96x62 -> 102x68 (multiples of 34) -> 2 rows x 3
cols of 34px tiles; a 4px patch leaves a 2px margin of each tile that no token sees; a 2x pixel
shuffle makes each token an 8x8px block of 2x2 patches. The tile tags are plain text, as in
SmolVLM v1's tokenizer (an `idefics3` model): the image block must not depend on them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
)

from flowtui.selftest.tiny.common import WORDS, finish, llama_text, save, word_tokenizer

FAMILY = "idefics3"
QUESTION = "Is there a red circle?"
IMAGE_SIZE = (150, 97)
BLOCK = ("<fake_token_around_image>", "<fake_token_around_image>")
TOLERANCE = 3.0

# The hub template (Idefics3-8B-Llama3, SmolVLM-Instruct): no system prompt, "User:" right
# before the image, the question glued to the image block, "<end_of_utterance>\n" after it.
TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

TILE, PATCH, SCALE = 34, 4, 2


def parts(bos: str, tag_tokens: bool):
    """Tokenizer, vision config, text config, image processor settings and tokens per tile,
    shared with SmolVLM. `tag_tokens`: the tile tags `<row_i_col_j>` and `<global-img>` are
    tokens of their own (SmolVLM2) or plain text split into pieces (SmolVLM v1's tokenizer)."""
    tags = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)] + ["<global-img>"]
    specials = [bos, "<end_of_utterance>", "<pad>", "<fake_token_around_image>", "<image>"]
    pieces = "row col global img < > _ - 1 2 3 4 5 6".split()
    tok = word_tokenizer(specials + (tags if tag_tokens else []), bos=bos,
                         eos="<end_of_utterance>", words=[*WORDS, *pieces])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=TILE, patch_size=PATCH)
    text = llama_text(tok, max_position_embeddings=1024)
    # Bilinear keeps each pixel's reach short, so the region check stays tight (the hub's
    # Lanczos resamples the same geometry).
    ip = dict(size={"longest_edge": 96}, max_image_size={"longest_edge": TILE}, resample=2,
              do_image_splitting=True)
    seq = ((TILE // PATCH) // SCALE) ** 2
    return tok, vision, text, ip, seq


def build(path: Path) -> Path:
    tok, vision, text, ip, seq = parts("<|begin_of_text|>", tag_tokens=False)
    config = Idefics3Config(vision_config=Idefics3VisionConfig(**vision), text_config=text,
                            scale_factor=SCALE,
                            image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(7)
    model = finish(Idefics3ForConditionalGeneration(config), tok)
    processor = Idefics3Processor(image_processor=Idefics3ImageProcessorPil(**ip), tokenizer=tok,
                                  image_seq_len=seq, chat_template=TEMPLATE)
    return save(model, processor, path)
