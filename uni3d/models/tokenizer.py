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

from uni3d.models.views import ANGLES, VIEW_NAMES
from uni3d.models.vocabulary import COLOUR_NAMES, COMPOSITE_WORDS, SHAPE_NAMES

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77
"""CLIP's context length (prompts are padded/truncated to it, as Stable Diffusion does)."""
END = "</w>"
PROMPT_WORDS: tuple[str, ...] = (
    *(*SHAPE_NAMES, *COLOUR_NAMES, *VIEW_NAMES, "a", "an", "object", "view"),
    *ANGLES.vocabulary(),  # after the first words: a vocabulary without them is a prefix of this one (same ids)
    *COMPOSITE_WORDS,  # last, for the same reason: the composite prior's words
)
"""The shapes dataset's caption vocabulary (both view schemes of :mod:`uni3d.models.views`, varied and composite
captions)."""
WORDS_BEFORE_COMPOSITES: tuple[str, ...] = PROMPT_WORDS[: len(PROMPT_WORDS) - len(COMPOSITE_WORDS)]
"""The vocabulary before the composite words: a tiny pipeline draws its text encoder for these and then grows it
(:func:`uni3d.models.tiny_sd.extend_vocabulary`), so its random weights are those drawn before the words existed."""


def _pieces(word: str) -> list[str]:
    """The ByteLevel characters of ``word`` (one per UTF-8 byte), the end-of-word suffix on the last one."""
    chars = "".join(piece for piece, _ in pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(word))
    return [*chars[:-1], chars[-1] + END]


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word's pieces: merge the lowest-ranked adjacent pair until none is ranked."""
    while len(pieces) > 1:
        rank, i = min((ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(pieces, pieces[1:], strict=False)))
        if rank == len(ranks):
            break
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2 :]]
    return pieces


def build_clip_tokenizer(words: Iterable[str] = PROMPT_WORDS) -> CLIPTokenizer:
    """A :class:`CLIPTokenizer` whose vocabulary holds every byte plus one token per word of ``words``.

    Merges, ranked in the order they are made: first each word's left-to-right chain (``("c", "u")``,
    ``("cu", "b")``, ...; the vocabulary of the first embedded prior, whose ids a prior fine-tuned on more words
    keeps); then, for each word that an earlier-ranked merge of another word breaks into pieces ("green" had been
    "gr" + "een"), merges joining its first two pieces until it is one token. Every word is then one token, the
    vocabulary of a word list is a prefix (same ids) of that of any longer list starting with it, and any other
    text still tokenizes, byte by byte.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [BOS, EOS, *alphabet, *(c + END for c in alphabet)]
    ranks: dict[tuple[str, str], int] = {}

    def merge(left: str, right: str) -> None:
        if (left, right) not in ranks:
            ranks[left, right] = len(ranks)
            tokens.append(left + right)

    unique = list(dict.fromkeys(w.lower() for w in words))
    for word in unique:
        pieces = _pieces(word)
        for i in range(1, len(pieces)):
            merge("".join(pieces[:i]), pieces[i])
    for word in unique:
        pieces = _bpe(_pieces(word), ranks)
        while len(pieces) > 1:
            merge(pieces[0], pieces[1])
            pieces = _bpe(pieces, ranks)
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=list(ranks), model_max_length=MAX_LENGTH)
