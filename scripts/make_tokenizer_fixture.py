"""Write tests/data/tokenizer/canonical_ids.json: Whisper's own token ids for test sentences.

The reference is OpenAI's ``whisper/assets/multilingual.tiktoken`` (byte strings and their
BPE ranks; MIT licence), read from the openai-whisper source distribution, which you get with

    pip download --no-deps --no-binary :all: openai-whisper==20250625

and encoded here with a small pure-Python copy of tiktoken's algorithm, independent of the
tokenizers library and of tubetune. Besides the ids it records hashes of the canonical
vocabulary and merge list, so tests can check a tokenizer.json against all 50,000 merges
without the sdist. Run: ``python scripts/make_tokenizer_fixture.py openai_whisper-*.tar.gz``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path

import regex

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT = REPO_ROOT / "tests" / "data" / "tokenizer" / "canonical_ids.json"
ASSET = "whisper/assets/multilingual.tiktoken"
# whisper/tokenizer.py passes GPT-2's pre-tokenisation pattern to tiktoken.
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SENTENCES = [
    ("en", " the two"),
    ("en", "The quick brown fox jumps over the lazy dog."),
    ("en", " They told them to try the train to Toronto at 10:30, then text Tom!"),
    ("en", "  the  time is 2024-06-01; that's it... π ≈ 3.14159 😀👍🏽"),
    ("en", " It's 'quoted' — t, tt, t's and \"the\"? Don't stop; they'll try: $25.99 (tax)."),
    ("zh-Hant", "今天天氣很好，我們去台北101看看吧！"),
    ("zh-Hant", " 這是一個測試：電腦、網路與語音辨識，共 2025 年。"),
    ("zh-Hans", "今天天气很好，我们去北京看看吧！"),
    ("zh-Hans", "这是一个测试：电脑、网络和语音识别，共 3 次。🙂"),
    ("ko", "안녕하세요, 오늘 날씨가 정말 좋네요!"),
    ("ko", " 저는 2024년에 서울에서 the 회의를 했습니다. 😊"),
    ("ko", "Whisper는 tokenizer를 사용합니다 — 中文 too, 12.5%."),
]


def byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte value (``bytes_to_unicode``), indexed by byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in chars):
        chars[b] = chr(256 + n)
    return [chars[b] for b in range(256)]


def read_ranks(sdist: Path) -> tuple[dict[bytes, int], bytes]:
    """``bytes -> rank`` from the sdist's multilingual.tiktoken, and the file's raw bytes."""
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/" + ASSET))
        raw = tar.extractfile(member).read()
    ranks = {}
    for line in raw.decode("ascii").splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(len(ranks))):
        sys.exit(f"{ASSET}: ranks are not 0..{len(ranks) - 1}")
    return ranks, raw


def merge_parts(piece: bytes, ranks: dict[bytes, int], below: int | None = None) -> list[bytes]:
    """tiktoken's byte-pair merge: join the adjacent pair whose result has the lowest rank
    (only ranks under ``below`` when given) until no adjacent pair is a token."""
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best, best_rank = None, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (below is None or rank < below) and (
                best_rank is None or rank < best_rank
            ):
                best, best_rank = i, rank
        if best is None:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def encode(text: str, ranks: dict[bytes, int]) -> list[int]:
    """Token ids of ``text`` (no special tokens), as tiktoken's ``encode_ordinary``: a piece
    that is itself a token is taken whole, any other is byte-pair merged."""
    ids = []
    for word in regex.findall(PATTERN, text):
        piece = word.encode("utf-8")
        if piece in ranks:
            ids.append(ranks[piece])
        else:
            ids.extend(ranks[part] for part in merge_parts(piece, ranks))
    return ids


def canonical_tables(ranks: dict[bytes, int]) -> tuple[list[str], list[str]]:
    """The byte-level vocabulary (id order) and merge list ("left right", rank order) that
    these ranks imply; every multi-byte token must split into exactly two earlier tokens."""
    chars = byte_chars()

    def text(token: bytes) -> str:
        return "".join(chars[b] for b in token)

    vocab = [text(token) for token, _ in sorted(ranks.items(), key=lambda item: item[1])]
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = merge_parts(token, ranks, below=rank)
        if len(parts) != 2:
            sys.exit(f"token {token!r} (rank {rank}) is not one merge of two earlier tokens")
        merges.append(f"{text(parts[0])} {text(parts[1])}")
    return vocab, merges


def sha256_lines(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sdist", type=Path, help="openai_whisper-20250625.tar.gz")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    ranks, raw = read_ranks(args.sdist)
    vocab, merges = canonical_tables(ranks)
    fixture = {
        "source": {
            "sdist": args.sdist.name,
            "sdist_sha256": hashlib.sha256(args.sdist.read_bytes()).hexdigest(),
            "asset": ASSET,
            "asset_sha256": hashlib.sha256(raw).hexdigest(),
            "licence": "MIT, Copyright (c) 2022 OpenAI",
            "made_by": "scripts/make_tokenizer_fixture.py (pure-Python tiktoken BPE)",
            "pattern": PATTERN,
        },
        "vocab": {"size": len(vocab), "sha256_of_lines": sha256_lines(vocab)},
        "merges": {"count": len(merges), "sha256_of_lines": sha256_lines(merges)},
        "cases": [
            {"language": lang, "text": text, "ids": encode(text, ranks)}
            for lang, text in SENTENCES
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, ensure_ascii=False, indent=1)
    text = re.sub(r"\[\s+([\d,\s]+?)\s+\]", lambda m: "[" + " ".join(m[1].split()) + "]", text)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {len(SENTENCES)} sentences, {len(merges)} merges to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
