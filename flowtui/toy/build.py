"""Build the toy model's (untrained) LlavaForConditionalGeneration and its processor.

Everything here is constructed locally from configs and a ``tokenizers`` WordLevel model:
nothing is downloaded. ``train.py`` trains the model and saves both with ``save_pretrained``.
"""

from __future__ import annotations

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from .scenes import COLOURS, SHAPES

IMAGE_SIZE = 96  # the processor resizes every input to IMAGE_SIZE x IMAGE_SIZE (no crop)
PATCH_SIZE = 8  # -> a 12 x 12 patch grid, 144 image tokens
GRID = (IMAGE_SIZE // PATCH_SIZE, IMAGE_SIZE // PATCH_SIZE)
NUM_IMAGE_TOKENS = GRID[0] * GRID[1]
# The longest caption: four objects of four tokens ("a red circle ,") and the end of sequence.
MAX_CAPTION_TOKENS = 20

# Mean/std of the normalisation: mid-grey, so the light backgrounds map near +1.
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
# Answer tokens are added tokens with normalized=False so they decode with their capital
# letter while questions are lower-cased by the normaliser.
ANSWERS = ["Yes", "No"]
WORDS = [
    # chat template
    "system", "answer", "questions", "about", "the", "shapes", "user", "assistant",
    # question words (a few extra ones so near-miss phrasings are not all <unk>)
    "is", "there", "a", "an", "any", "shape", "object", "are", "what", "colour", "color",
    "how", "many", "of", "in", "image", "picture", "yes", "no",
    *COLOURS, *SHAPES,
]
# Words added with the caption stage (train_captions.py), after the others so every earlier id
# stays put. "," and "." are output-only: the normaliser strips punctuation from any input, so
# no prompt ever reads them, but the model writes them and the decoder joins them to the word
# before ("a red circle, a blue square.").
CAPTION_WORDS = ["describe", "this", "scene", "caption", ",", "."]
# The vocabulary stages 1-3 train with (the release before captions): building with it keeps
# the seed's initialisation, so those stages still reproduce that release.
BASE_VOCAB_SIZE = len(SPECIAL) + len(ANSWERS) + len(WORDS)

SYSTEM_PROMPT = "system: answer questions about the shapes. user:"
# The engine calls apply_chat_template(conversation, add_generation_prompt=True) with one
# user turn holding an image and a text; assistant turns (if any) are rendered as text.
CHAT_TEMPLATE = (
    "{{ bos_token }}" + SYSTEM_PROMPT +
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %} assistant: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ eos_token }}"
    "{% else %}"
    "{% if message['content'] is string %} {{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %} {{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} assistant:{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer: lower-cases, drops punctuation, unknown words -> <unk>."""
    vocab = {t: i for i, t in enumerate(SPECIAL + ANSWERS + WORDS + CAPTION_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Lower-case and turn everything but letters/digits into spaces, so "Is there a RED
    # circle?" and "is there a red circle" give the same tokens.
    tok.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), normalizers.Replace(Regex(r"[^a-z0-9]+"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Words joined by spaces, with no space before "," and "." (WordPiece's clean-up).
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False, single_word=True) for t in ANSWERS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    return fast


def build_image_processor() -> CLIPImageProcessorPil:
    """CLIP's PIL-backend processor (no torchvision), squashing any image to a square."""
    return CLIPImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False,
        do_resize=True,
        resample=3,  # bicubic
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )


def build_processor() -> LlavaProcessor:
    return LlavaProcessor(
        image_processor=build_image_processor(),
        tokenizer=build_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",  # drop CLIP's CLS token ...
        num_additional_image_tokens=1,  # ... which the vision tower adds: 144 image tokens
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
    )


def build_config(tokenizer: PreTrainedTokenizerFast, vocab_size: int | None = None) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=96,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_channels=3,
        hidden_act="gelu",
        projection_dim=96,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer) if vocab_size is None else vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,  # type: ignore[call-arg]  # still read through **kwargs
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    assert isinstance(image_token, int)  # one token, one id
    cfg = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=NUM_IMAGE_TOKENS,
        tie_word_embeddings=False,
    )
    return cfg


def build_model(seed: int = 0, vocab_size: int | None = None,
                ) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A freshly initialised toy model (float32) and its processor; `vocab_size` rows in the
    embeddings and head (default: the whole tokenizer)."""
    processor = build_processor()
    cfg = build_config(processor.tokenizer, vocab_size)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).float()
    gc = model.generation_config
    gc.bos_token_id = processor.tokenizer.bos_token_id
    gc.eos_token_id = processor.tokenizer.eos_token_id
    gc.pad_token_id = processor.tokenizer.pad_token_id
    gc.do_sample = False
    gc.max_new_tokens = MAX_CAPTION_TOKENS
    return model, processor
