#!/usr/bin/env python3
"""Byte-level BPE vocabulary for Strata's default model, written as a vocab-only GGUF file.

The vocabulary is the kind Strata's tokenizer reads as `tokenizer.ggml.model = gpt2`:
  - ids 0..255: the 256 bytes, as GPT-2's byte-to-unicode strings, in GPT-2's order;
  - then one token per merge, in merge order (merge i makes token 256 + i);
  - then the special tokens <|begin_of_text|> (BOS) and <|end_of_text|> (EOS), token_type 3.
Text is cut into pieces by the `llama-bpe` pre-tokenizer (Llama 3's regex, which is what
`tokenizer.ggml.pre = llama-bpe` selects in offload/tokenizer/pre_tokenizer.cpp), and merges
never cross a piece. Training counts the pieces once and merges on the distinct pieces weighted
by their counts, so 4 MB of text trains in well under a minute of plain Python.

The regex below is Llama 3's, spelled with Python `re` classes: letters are [^\\W\\d_] and
numbers \\d. That equals \\p{L} / \\p{N} on ASCII text (the KJV corpus is pure ASCII, which
main() checks); on other text the C++ tokenizer is the reference. `encode()` reproduces Strata's
encoder (lowest-rank merge first, and llama-bpe's ignore_merges: a piece that is itself a token
is taken whole) so prepare_data.py can check that Strata's ids are the ones this file predicts.

Only the Python standard library is used.

  python3 train_bpe.py --text corpus.txt --vocab-size 4096 --out vocab.gguf
"""

from __future__ import annotations

import argparse
import collections
import re
import struct
import sys
import time

BOS_TEXT = "<|begin_of_text|>"
EOS_TEXT = "<|end_of_text|>"
SPECIAL_TOKENS = (BOS_TEXT, EOS_TEXT)

# Llama 3's pre-tokenizer (llama.cpp's LLAMA_VOCAB_PRE_TYPE_LLAMA3), with \p{L} -> [^\W\d_],
# \p{N} -> \d, and "not letter, not number" -> (?:[^\w]|_).
LLAMA3_SPLIT = re.compile(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    r"|(?:[^\r\n\w]|_)?[^\W\d_]+"
    r"|\d{1,3}"
    r"| ?(?:[^\s\w]|_)+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)


def bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table, indexed by byte value."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table = [""] * 256
    for b in printable:
        table[b] = chr(b)
    extra = 256
    for b in range(256):
        if not table[b]:
            table[b] = chr(extra)
            extra += 1
    return table


BYTE_CHARS = bytes_to_unicode()


def byte_tokens() -> list[str]:
    """The 256 byte tokens in GPT-2's vocabulary order: printable bytes first, then the rest."""
    printable = [b for b in range(256) if BYTE_CHARS[b] == chr(b)]
    others = [b for b in range(256) if BYTE_CHARS[b] != chr(b)]
    return [BYTE_CHARS[b] for b in printable + others]


def split_pieces(text: str) -> list[str]:
    return LLAMA3_SPLIT.findall(text)


def to_byte_level(piece: str) -> str:
    return "".join(BYTE_CHARS[b] for b in piece.encode("utf-8"))


def count_pieces(texts: list[str]) -> collections.Counter:
    """Byte-level piece -> occurrences over all texts."""
    counts: collections.Counter = collections.Counter()
    for text in texts:
        counts.update(split_pieces(text))
    return collections.Counter({to_byte_level(p): n for p, n in counts.items()})


def train_merges(piece_counts: collections.Counter, num_merges: int, min_count: int = 2,
                 log=None) -> list[tuple[str, str]]:
    """Classic BPE over distinct pieces: repeatedly merge the most frequent adjacent pair
    (ties: the lexicographically smallest pair), updating pair counts incrementally."""
    words = [list(w) for w in piece_counts]  # symbols of each distinct piece
    freqs = [piece_counts[w] for w in piece_counts]
    pair_counts: collections.Counter = collections.Counter()
    pair_words: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
    for i, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += freqs[i]
            pair_words[pair].add(i)

    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges and pair_counts:
        best, best_count = min(pair_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if best_count < min_count:
            break
        merges.append(best)
        merged = best[0] + best[1]
        for i in list(pair_words[best]):
            symbols = words[i]
            freq = freqs[i]
            for pair in zip(symbols, symbols[1:]):  # forget this word's old pairs
                pair_counts[pair] -= freq
                if pair_counts[pair] <= 0:
                    del pair_counts[pair]
                pair_words[pair].discard(i)
            out, k = [], 0
            while k < len(symbols):
                if k + 1 < len(symbols) and symbols[k] == best[0] and symbols[k + 1] == best[1]:
                    out.append(merged)
                    k += 2
                else:
                    out.append(symbols[k])
                    k += 1
            words[i] = out
            for pair in zip(out, out[1:]):
                pair_counts[pair] += freq
                pair_words[pair].add(i)
        pair_words.pop(best, None)
        if log and len(merges) % 500 == 0:
            log(f"  {len(merges)} merges, last {best[0]!r}+{best[1]!r} x{best_count}")
    return merges


class Vocab:
    """Tokens, merge ranks and special ids of a trained vocabulary."""

    def __init__(self, merges: list[tuple[str, str]]):
        self.merges = merges
        self.tokens = byte_tokens() + [a + b for a, b in merges] + list(SPECIAL_TOKENS)
        self.token_types = [1] * (len(self.tokens) - len(SPECIAL_TOKENS)) + [3] * len(SPECIAL_TOKENS)
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {pair: r for r, pair in enumerate(merges)}
        self.bos_id = self.ids[BOS_TEXT]
        self.eos_id = self.ids[EOS_TEXT]
        self._cache: dict[str, list[int]] = {}

    def encode_piece(self, piece: str) -> list[int]:
        """Ids of one byte-level piece, as Strata's BpeEncoder with ignore_merges."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        if piece in self.ids:
            ids = [self.ids[piece]]
        else:
            symbols = list(piece)
            while len(symbols) > 1:
                ranked = [(self.ranks.get(p, len(self.ranks)), k)
                          for k, p in enumerate(zip(symbols, symbols[1:]))]
                rank, k = min(ranked)
                if rank == len(self.ranks):
                    break
                symbols[k:k + 2] = [symbols[k] + symbols[k + 1]]
            ids = [self.ids[s] for s in symbols]
        self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Ids of plain text (no BOS/EOS, no special-token parsing)."""
        out: list[int] = []
        for piece in split_pieces(text):
            out.extend(self.encode_piece(to_byte_level(piece)))
        return out


# ---- vocab-only GGUF (metadata, no tensors) -----------------------------------------------------

GGUF_UINT32, GGUF_INT32, GGUF_BOOL, GGUF_STRING, GGUF_ARRAY = 4, 5, 7, 8, 9


def _gguf_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _gguf_value(kind: int, value) -> bytes:
    if kind == GGUF_STRING:
        return _gguf_string(value)
    if kind == GGUF_UINT32:
        return struct.pack("<I", value)
    if kind == GGUF_INT32:
        return struct.pack("<i", value)
    if kind == GGUF_BOOL:
        return struct.pack("<B", 1 if value else 0)
    raise ValueError(kind)


def write_vocab_gguf(path: str, vocab: Vocab, name: str) -> None:
    """GGUF v3 with general.* and tokenizer.ggml.* keys only (written via path.tmp + rename)."""
    kv: list[tuple[str, int, object]] = [
        ("general.architecture", GGUF_STRING, "llama"),
        ("general.type", GGUF_STRING, "vocab"),
        ("general.name", GGUF_STRING, name),
        ("tokenizer.ggml.model", GGUF_STRING, "gpt2"),
        ("tokenizer.ggml.pre", GGUF_STRING, "llama-bpe"),
        ("tokenizer.ggml.tokens", GGUF_ARRAY, (GGUF_STRING, vocab.tokens)),
        ("tokenizer.ggml.token_type", GGUF_ARRAY, (GGUF_INT32, vocab.token_types)),
        ("tokenizer.ggml.merges", GGUF_ARRAY, (GGUF_STRING, [f"{a} {b}" for a, b in vocab.merges])),
        ("tokenizer.ggml.bos_token_id", GGUF_UINT32, vocab.bos_id),
        ("tokenizer.ggml.eos_token_id", GGUF_UINT32, vocab.eos_id),
        ("tokenizer.ggml.add_bos_token", GGUF_BOOL, True),
        ("tokenizer.ggml.add_eos_token", GGUF_BOOL, False),
    ]
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)))
    for key, kind, value in kv:
        out += _gguf_string(key) + struct.pack("<I", kind)
        if kind == GGUF_ARRAY:
            elem_kind, items = value
            out += struct.pack("<IQ", elem_kind, len(items))
            for item in items:
                out += _gguf_value(elem_kind, item)
        else:
            out += _gguf_value(kind, value)
    out += b"\0" * (-len(out) % 32)  # ggml pads the (empty) data section start to the alignment
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(out)
    import os
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True, help="training text (UTF-8); special-token texts are dropped")
    ap.add_argument("--vocab-size", type=int, default=4096, help="total ids incl. bytes and specials")
    ap.add_argument("--out", required=True, help="vocab-only GGUF to write")
    ap.add_argument("--name", default="strata-tiny-bpe", help="general.name")
    args = ap.parse_args()

    t0 = time.time()
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    if not text.isascii():
        print("train_bpe: the text is not ASCII; the Python pre-tokenizer equals Strata's only on "
              "ASCII (see the top comment)", file=sys.stderr)
        return 1
    texts = re.split("|".join(re.escape(s) for s in SPECIAL_TOKENS), text)
    counts = count_pieces(texts)
    print(f"train_bpe: {len(text)} chars, {sum(counts.values())} pieces, {len(counts)} distinct",
          flush=True)
    num_merges = args.vocab_size - 256 - len(SPECIAL_TOKENS)
    merges = train_merges(counts, num_merges, log=lambda s: print(s, flush=True))
    if len(merges) < num_merges:
        print(f"train_bpe: only {len(merges)} merges occur at least twice; vocab is smaller",
              file=sys.stderr)
    vocab = Vocab(merges)
    write_vocab_gguf(args.out, vocab, args.name)
    n_ids = sum(len(vocab.encode(t)) for t in texts)
    print(f"train_bpe: wrote {args.out}: {len(vocab.tokens)} tokens ({len(merges)} merges), "
          f"bos {vocab.bos_id}, eos {vocab.eos_id}; the text is {n_ids} ids "
          f"({len(text) / max(n_ids, 1):.2f} chars/id); {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
