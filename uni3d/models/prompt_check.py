"""Notes on a prompt before a run: words the prior cannot read, and prompts that CLIP's context cuts short.

Two ways a prompt silently loses meaning. (1) The embedded prior's tokenizer (:func:`build_clip_tokenizer`) holds
one token per caption word (shapes, colours, views); any other word still tokenizes, byte by byte, but the prior
never saw it in training, so ``"a dragon"`` makes some primitive. (2) Any CLIP tokenizer truncates to its context
length (77 tokens with BOS and EOS); each camera's view words (:class:`uni3d.models.views.ViewScheme`) come last,
so a long prompt loses its view words first. Each note is one line for the CLI, the batch log, the app and ``metrics.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from transformers import PreTrainedTokenizerBase

from uni3d.models.tokenizer import END, build_clip_tokenizer
from uni3d.models.views import COARSE, ViewScheme, split_view

_WORD = re.compile(r"[^\W\d_]+|[^\w\s.,;:!?'\"()\[\]{}-]")
"""A word: a run of letters (any script), or one symbol that is neither a letter, a digit, a space nor punctuation."""


@cache
def _caption_vocab() -> dict[str, int]:
    return build_clip_tokenizer().get_vocab()


def is_caption_tokenizer(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``tokenizer`` is a shapes caption tokenizer (a prior made by ``uni3d train-prior``): the current one
    or an earlier one, whose vocabulary the current one extends (every token at the same id)."""
    vocab, current = tokenizer.get_vocab(), _caption_vocab()
    return all(current.get(token) == i for token, i in vocab.items())


def unknown_words(tokenizer: PreTrainedTokenizerBase, text: str) -> list[str]:
    """The distinct words of ``text`` (lower case: runs of letters of any script, and each other symbol such as an
    emoji) with no whole-word token in ``tokenizer``."""
    vocab = tokenizer.get_vocab()
    words = dict.fromkeys(_WORD.findall(text.lower()))
    return [w for w in words if w + END not in vocab]


def token_count(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """Tokens of ``text`` with the special ones, untruncated (and without the tokenizer's too-long warning)."""
    return len(tokenizer(text, truncation=False, verbose=False).input_ids)


@dataclass(frozen=True)
class Remedies:
    """What a note tells the user to do, in the words of the place they read it (the CLI's flags, the app's menus)."""

    other_prior: str
    keep_view: str


CLI_REMEDIES = Remedies(
    other_prior="pass --prior with a Stable Diffusion folder",
    keep_view="set view_dependent: false in --config to keep it",
)
APP_REMEDIES = Remedies(
    other_prior="choose a Stable Diffusion folder in the Prior menu",
    keep_view="the command line keeps it with view_dependent: false in --config",
)


def prompt_notes(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    negative_prompt: str = "",
    view_dependent: bool = True,
    views: ViewScheme = COARSE,
    *,
    remedies: Remedies = CLI_REMEDIES,
) -> list[str]:
    """One-line notes on ``prompt`` (and ``negative_prompt``) for a prior with ``tokenizer`` prompted in ``views``;
    empty when all is well. ``view_dependent``: whether each camera's view words are appended, replacing a view the
    prompt names; ``remedies``: the advice, in the words of the CLI or the app."""
    notes: list[str] = []
    named = split_view(prompt)[1]
    if named is not None and view_dependent:
        notes.append(
            f"the prompt ends with a view ('{named} view'); each camera's own view replaces it (view-dependent "
            f"prompting), so the asset is seen from all sides; {remedies.keep_view}"
        )
    if is_caption_tokenizer(tokenizer):
        unknown = unknown_words(tokenizer, prompt)
        if unknown:
            composites = "beside" + END in tokenizer.get_vocab()
            knows = (
                "shapes, colours, a nose, handle or knob, and two things on top of or beside each other (e.g. 'a red "
                "cube on top of a blue sphere'), so expect coloured primitives"
                if composites
                else "a shape, a colour and a view (e.g. 'a red cube'), so expect a coloured primitive"
            )
            notes.append(
                f"the embedded shapes prior never saw the word(s) {', '.join(map(repr, unknown))}; it knows {knows}, "
                f"or {remedies.other_prior}"
            )
        unknown = unknown_words(tokenizer, negative_prompt)
        if unknown:
            notes.append(
                f"the embedded shapes prior never saw the negative prompt word(s) {', '.join(map(repr, unknown))}, "
                "so guidance away from them steers nowhere known"
            )
    limit = tokenizer.model_max_length
    base = split_view(prompt)[0]
    count = max(token_count(tokenizer, f"{base}, {suffix}") for suffix in views.example_suffixes())
    if count > limit:
        notes.append(
            f"the prompt with its view suffix is {count} tokens, over the prior's {limit}: the text encoder cuts "
            f"the end off (the view words first); shorten the prompt"
        )
    return notes
