#!/usr/bin/env python3
"""Step 1 of the default model (on the development machine): text, vocabulary, token ids.

  python3 tools/default_model/prepare_data.py --strata build-model/strata [--work .train]

1. Text. Debian's `bible-kjv-text` holds the King James Version (public domain) compressed for
   its reader program `bible` (package `bible-kjv`); both are fetched with `apt-get download`
   and unpacked with `dpkg -x` into WORK/debs (nothing is installed), and `bible` prints every
   verse, Genesis 1:1 to Revelation 22:21.
2. Corpus. One document per chapter: "Genesis 1\\n\\n" and then one verse per line, without
   verse numbers. Every 50th chapter (23 of 1189) is held out for validation.
3. Vocabulary. train_bpe.py trains a 4096-id byte-level BPE on the training chapters and writes
   WORK/vocab.gguf.
4. Ids. `strata tokenize --file` turns each split into ids with exactly Strata's tokenizer: the
   chapters are joined by "<|end_of_text|><|begin_of_text|>" and tokenized with special-token
   parsing (and the BOS the vocabulary adds), so each chapter is BOS, its text, EOS. The ids are
   cross-checked against train_bpe.py's encoder chapter by chapter, and stored as little-endian
   uint16 in WORK/train.bin and WORK/val.bin, with WORK/meta.json describing them.

WORK (default .train at the repository root, git-ignored) is what train.py reads on the GPU
machine; only train.bin, val.bin and meta.json are needed there.
"""

from __future__ import annotations

import argparse
import array
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_bpe  # noqa: E402

VAL_EVERY = 50  # every 50th chapter (0-based index % 50 == 49) goes to validation


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def fetch_bible(work: str) -> tuple[str, str]:
    """Downloads and unpacks the two Debian packages; returns (bible binary, data folder)."""
    debs = os.path.join(work, "debs")
    root = os.path.join(debs, "root")
    os.makedirs(debs, exist_ok=True)
    for package in ("bible-kjv-text", "bible-kjv"):
        if not glob.glob(os.path.join(debs, package + "_*.deb")):
            run(["apt-get", "download", package], cwd=debs)
        (deb,) = glob.glob(os.path.join(debs, package + "_*.deb"))
        run(["dpkg", "-x", deb, root])
    return os.path.join(root, "usr/bin/bible"), os.path.join(root, "usr/lib")


def read_chapters(bible: str, data_dir: str) -> list[tuple[str, list[str]]]:
    """[(heading "Genesis 1", [verse text, ...]), ...] from `bible`'s pretty-printed output."""
    # Pretty printing prints "Book N" when the chapter changes and "  V text" per verse; -l with
    # a huge width keeps every verse on one line.
    out = subprocess.run([bible, "-l", "1000000", "-p", data_dir, "gen1:1-rev22:21"],
                         check=True, capture_output=True, text=True).stdout
    chapters: list[tuple[str, list[str]]] = []
    verse = re.compile(r"^  (\d+) (.*)$")
    for line in out.splitlines():
        if not line.strip():
            continue
        m = verse.match(line)
        if m:
            if not chapters or int(m.group(1)) != len(chapters[-1][1]) + 1:
                raise SystemExit(f"prepare_data: unexpected verse line {line[:60]!r}")
            chapters[-1][1].append(m.group(2).strip())
        else:
            chapters.append((line.strip(), []))
    n_verses = sum(len(v) for _, v in chapters)
    if len(chapters) != 1189 or n_verses != 31102:
        raise SystemExit(f"prepare_data: expected 1189 chapters / 31102 verses, got "
                         f"{len(chapters)} / {n_verses}")
    return chapters


def chapter_text(heading: str, verses: list[str]) -> str:
    return heading + "\n\n" + "\n".join(verses) + "\n"


def tokenize(strata: str, vocab_path: str, text_path: str) -> list[int]:
    out = subprocess.run([strata, "tokenize", "-m", vocab_path, "--file", text_path],
                         check=True, capture_output=True, text=True).stdout.strip()
    return [int(x) for x in out.split(",")] if out else []


def write_u16(path: str, ids: list[int]) -> None:
    data = array.array("H", ids)
    if sys.byteorder != "little":
        data.byteswap()
    with open(path, "wb") as f:
        data.tofile(f)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("--strata", default=os.path.join(repo, "build-model", "strata"),
                    help="the strata binary (for `strata tokenize`)")
    ap.add_argument("--work", default=os.path.join(repo, ".train"), help="output folder")
    ap.add_argument("--vocab-size", type=int, default=4096)
    args = ap.parse_args()
    t0 = time.time()
    os.makedirs(args.work, exist_ok=True)

    bible, data_dir = fetch_bible(args.work)
    chapters = read_chapters(bible, data_dir)
    texts = [chapter_text(h, v) for h, v in chapters]
    splits = {
        "train": [t for i, t in enumerate(texts) if i % VAL_EVERY != VAL_EVERY - 1],
        "val": [t for i, t in enumerate(texts) if i % VAL_EVERY == VAL_EVERY - 1],
    }
    separator = train_bpe.EOS_TEXT + train_bpe.BOS_TEXT
    for name, docs in splits.items():
        with open(os.path.join(args.work, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write(separator.join(docs) + train_bpe.EOS_TEXT)
    print(f"prepare_data: {len(chapters)} chapters, {sum(map(len, texts))} chars; "
          f"{len(splits['val'])} chapters held out", flush=True)

    vocab_path = os.path.join(args.work, "vocab.gguf")
    run([sys.executable, os.path.join(os.path.dirname(__file__), "train_bpe.py"),
         "--text", os.path.join(args.work, "train.txt"), "--vocab-size", str(args.vocab_size),
         "--out", vocab_path])

    # Rebuild the vocabulary from the file just written to cross-check Strata's ids.
    vocab = read_vocab(vocab_path)
    meta = {"vocab": "vocab.gguf", "vocab_sha256": sha256(vocab_path), "vocab_size": len(vocab.tokens),
            "bos_id": vocab.bos_id, "eos_id": vocab.eos_id, "dtype": "uint16",
            "documents": "one chapter each: BOS, text, EOS", "source": "Debian bible-kjv-text (KJV, public domain)"}
    for name, docs in splits.items():
        ids = tokenize(args.strata, vocab_path, os.path.join(args.work, f"{name}.txt"))
        expected: list[int] = []
        for doc in docs:
            expected += [vocab.bos_id] + vocab.encode(doc) + [vocab.eos_id]
        if ids != expected:
            first = next((i for i, (a, b) in enumerate(zip(ids, expected)) if a != b),
                         min(len(ids), len(expected)))
            raise SystemExit(f"prepare_data: strata's ids for {name} differ from train_bpe.py's at "
                             f"index {first} ({ids[first:first + 8]} vs {expected[first:first + 8]})")
        if max(ids) >= 65536:
            raise SystemExit("prepare_data: ids do not fit uint16")
        write_u16(os.path.join(args.work, f"{name}.bin"), ids)
        meta[f"{name}_tokens"] = len(ids)
        meta[f"{name}_documents"] = len(docs)
        print(f"prepare_data: {name}: {len(docs)} chapters, {len(ids)} ids (match train_bpe.py)",
              flush=True)
    with open(os.path.join(args.work, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")

    total = sum(os.path.getsize(os.path.join(args.work, n)) for n in ("train.bin", "val.bin", "meta.json"))
    print(f"prepare_data: done in {time.time() - t0:.0f} s; train.bin + val.bin + meta.json = "
          f"{total / 1e6:.1f} MB in {args.work}")
    return 0


def read_vocab(path: str) -> train_bpe.Vocab:
    """The merges of a vocab GGUF written by train_bpe.py (a minimal GGUF metadata reader)."""
    import struct
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    def string() -> str:
        nonlocal pos
        (n,) = take("Q")
        s = data[pos:pos + n].decode("utf-8")
        pos += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(kind: int):
        if kind == 8:
            return string()
        if kind == 9:
            elem, n = take("IQ")
            return [value(elem) for _ in range(n)]
        return take(scalar[kind])[0]

    magic = data[:4]
    pos = 4
    _, _, n_kv = take("IQQ")
    if magic != b"GGUF":
        raise SystemExit(f"{path}: not a GGUF file")
    md = {}
    for _ in range(n_kv):
        key = string()
        (kind,) = take("I")
        md[key] = value(kind)
    merges = [tuple(m.split(" ", 1)) for m in md["tokenizer.ggml.merges"]]
    vocab = train_bpe.Vocab(merges)
    if vocab.tokens != md["tokenizer.ggml.tokens"]:
        raise SystemExit(f"{path}: tokens are not the ones its merges imply")
    return vocab


if __name__ == "__main__":
    sys.exit(main())
