"""A CLIP tokenizer built locally (no hub download): byte-level BPE with whole-word merges for a word list.

CLIP's tokenizer (Radford et al. 2021) is byte-level BPE: a word becomes its bytes, each mapped to a printable
character (``tokenizers``' ``ByteLevel`` alphabet), the last one carrying the end-of-word suffix ``</w>``; merges
then join adjacent pieces in rank order. Our vocabulary is the 256 byte characters, each also with ``</w>``,
the two special tokens, and for every word of ``words`` the chain of left-to-right merges that spells it, so the
prompt vocabulary (shapes, colours, views) becomes one token per word and any other text still tokenizes, byte
by byte. transformers 5 takes ``vocab=dict`` and ``merges=list of pairs``; the old ``vocab_file=`` is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import pre_tokenizers
from transformers import CLIPTokenizer

from uni3d.prior.primitives import COLOUR_NAMES, SHAPE_NAMES
from uni3d.prior.views import VIEW_NAMES

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77
"""CLIP's context length (prompts are padded/truncated to it, as Stable Diffusion does)."""
END = "</w>"
PROMPT_WORDS: tuple[str, ...] = (*SHAPE_NAMES, *COLOUR_NAMES, *VIEW_NAMES, "a", "an", "object", "view")
"""The shapes dataset's caption vocabulary."""


def _pieces(word: str) -> list[str]:
    """The ByteLevel characters of ``word`` (one per UTF-8 byte), the end-of-word suffix on the last one."""
    chars = "".join(piece for piece, _ in pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(word))
    return [*chars[:-1], chars[-1] + END]


def build_clip_tokenizer(words: Iterable[str] = PROMPT_WORDS) -> CLIPTokenizer:
    """A :class:`CLIPTokenizer` whose vocabulary holds every byte plus one token per word of ``words``.

    Merges are ranked in order of appearance; a word whose chain is interrupted by an earlier-ranked merge of
    another word still tokenizes (into a few pieces), so the tokenizer is total over all text.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [BOS, EOS, *alphabet, *(c + END for c in alphabet)]
    merges: list[tuple[str, str]] = []
    for word in dict.fromkeys(w.lower() for w in words):  # unique, in order
        pieces = _pieces(word)
        left = pieces[0]
        for right in pieces[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
                tokens.append(left + right)
            left += right
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)
