"""
Token data for pre-training: tokenizers, token files and the batch readers that train.py uses.

Prepare a data set (writes data/<name>/train.bin, val.bin, meta.json, and tokenizer.model when one is trained):
    python data.py                                  # Python's own stdlib sources, a fresh 8192-piece BPE, no download
    python data.py --input notes/ --tokenizer gpt2  # your .txt/.jsonl files (folders, globs) as GPT-2 tokens
    python data.py --source shakespeare             # a downloadable set; needs internet (and `datasets` for some)
Read it back:
    tokens = read_tokens("data/stdlib/train.bin", vocab_size=model_vocab_size)
    stream = BatchStream(tokens, micro_rows=8, seq_len=256, rank=rank, world=world, accum=accum)
"""
import argparse
import contextlib
import functools
import glob
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm
import tiktoken
import torch
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str  # GPT-2's pre-splitting regex

EOT = "<|endoftext|>"
SP_SPACE = "\u2581"  # '▁', how sentencepiece writes a space inside its pieces
TRAIN_LINES = 500_000  # lines the BPE learns from: ~7 s on the stdlib; all 730k barely change tokens/byte
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SOURCES = {  # --source -> (Hugging Face data set, config, documents taken unless --max_docs says otherwise)
    "tinystories": ("roneneldan/TinyStories", None, None),
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample-10BT", 100_000),  # ~100M GPT-2 tokens, not 10B
}


class DataError(ValueError):
    """Bad input or bad data on disk. The message is one line naming the file or flag and what would be valid."""


def _why(e):
    """Last line of a library's error, without the C++ file and check that sentencepiece puts in front."""
    return (str(e).strip().splitlines() or [type(e).__name__])[-1].rsplit("] ", 1)[-1].rstrip(")>\"'")


# -----------------------------------------------------------------------------
# tokenizers

class Tokenizer:
    """One face for tiktoken encodings (a name or a .tiktoken rank file) and sentencepiece .model files."""

    def __init__(self, spec):
        self.name = spec = str(spec)
        self._sp = self._tt = None
        names, is_file = tiktoken.list_encoding_names(), spec.endswith((".model", ".tiktoken"))
        if not is_file and spec not in names:
            raise DataError(f"unknown tokenizer {spec!r}: expected a tiktoken encoding name ({', '.join(names)}), "
                            "a .tiktoken rank file or a sentencepiece .model file")
        if is_file and not Path(spec).is_file():
            raise DataError(f"tokenizer file {spec} does not exist")
        try:
            if spec.endswith(".model"):
                self._model_bytes = Path(spec).read_bytes()
                self._sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)
            elif spec.endswith(".tiktoken"):
                ranks = load_tiktoken_bpe(spec)
                pat_str, specials = tiktoken_extras(spec, len(ranks))
                self._tt = tiktoken.Encoding(Path(spec).stem, pat_str=pat_str, mergeable_ranks=ranks,
                                             special_tokens=specials)
            else:
                self._tt = tiktoken.get_encoding(spec)
        except (ValueError, OSError, RuntimeError, KeyError) as e:  # a malformed file, or offline with nothing cached
            raise DataError(f"tokenizer {spec}: cannot load it ({_why(e)}); a tiktoken name needs the internet "
                            "once, or its files in $TIKTOKEN_CACHE_DIR") from None
        if self._tt is not None:
            if EOT not in self._tt._special_tokens:
                raise DataError(f"tokenizer {spec}: it has no {EOT} special token to separate documents with")
            self.vocab_size, self.eot_id = self._tt.n_vocab, self._tt.eot_token
            return
        # the separator goes before every document, so BOS is the natural choice
        self.vocab_size, self.eot_id = self._sp.get_piece_size(), self._sp.bos_id()
        if self.eot_id < 0:
            raise DataError(f"{spec}: the sentencepiece model has no BOS piece to separate documents with")
        # a literal '▁' would decode as a space; its UTF-8 byte pieces decode verbatim (when byte_fallback is on)
        self._space_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in SP_SPACE.encode()]

    @functools.cached_property
    def fingerprint(self):
        """sha256 of the vocabulary, cut to a non-negative int63 so that it fits the int64 file header."""
        h = hashlib.sha256(getattr(self, "_model_bytes", b""))
        if self._tt is not None and self._tt._pat_str != r50k_pat_str:  # another split gives other ids for a text
            h.update(self._tt._pat_str.encode())  # (GPT-2's adds nothing, so older fingerprints stay valid)
        for i in range(self.vocab_size if self._tt is not None else 0):  # the bytes of each id, in id order
            with contextlib.suppress(KeyError):  # some encodings leave ids unused between ranks and specials
                piece = self._tt.decode_single_token_bytes(i)
                h.update(b"%d %d " % (i, len(piece)) + piece)
        return int.from_bytes(h.digest()[:8], "little") >> 1

    @functools.cached_property
    def token_bytes(self):
        """UTF-8 bytes of each id's text, int64 [vocab_size]; special and control ids count 0. Summed over the
        scored targets it gives the exact byte count that bits per byte divides by (nanochat's token_bytes)."""
        n = np.zeros(self.vocab_size, np.int64)
        if self._tt is not None:
            specials = set(self._tt._special_tokens.values())
            for i in range(self.vocab_size):
                with contextlib.suppress(KeyError):  # ids left unused between ranks and specials count 0
                    n[i] = 0 if i in specials else len(self._tt.decode_single_token_bytes(i))
            return n
        sp = self._sp
        for i in range(self.vocab_size):
            if sp.is_byte(i):  # <0xNN>: one byte of a character the vocabulary lacks
                n[i] = 1
            elif not (sp.is_control(i) or sp.is_unknown(i)):
                n[i] = len(sp.id_to_piece(i).replace(SP_SPACE, " ").encode())
        return n

    def encode(self, text):
        return self.encode_batch([text])[0]

    def encode_batch(self, texts):
        """Ids of each text, no special tokens. One sentencepiece call per list saves its per-call overhead."""
        if self._tt is not None:
            return [self._tt.encode_ordinary(t) for t in texts]
        out = self._sp.encode(list(texts), num_threads=1)  # the parallelism comes from processes
        for k, text in enumerate(texts):
            if SP_SPACE in text and self._sp.unk_id() not in self._space_ids:
                parts = self._sp.encode(text.split(SP_SPACE), num_threads=1)
                out[k] = parts[0] + [i for part in parts[1:] for i in self._space_ids + part]
        return out

    def decode(self, ids):
        ids = np.asarray(ids).reshape(-1).tolist()
        return self._tt.decode(ids) if self._tt is not None else self._sp.decode(ids)


def tiktoken_extras(rank_file, n_ranks):
    """(pre-split regex, special tokens) of a .tiktoken rank file, from FILE.json beside it when there is one
    ({"pat_str": ..., "special_tokens": {name: id}}, as prune_tokenizer writes for a non-GPT-2 source); a bare
    rank file says nothing of either, so it gets GPT-2's regex and <|endoftext|> right after the last rank."""
    about = Path(str(rank_file) + ".json")
    if not about.is_file():
        return r50k_pat_str, {EOT: n_ranks}
    extras = json.loads(about.read_text())
    return extras["pat_str"], {name: int(i) for name, i in extras["special_tokens"].items()}


def train_sentencepiece(docs, vocab_size):
    """A byte-fallback BPE that round-trips any text: identity normalization, no dummy prefix, spaces kept
    (runs of them may be pieces, for indentation), '\\n' a piece of its own, unknown characters as UTF-8 bytes.
    Deterministic: the input goes in a fixed order and one thread merges (with two, the merges differ)."""
    # sentencepiece learns from 'sentences' and skips long ones, so it gets lines; '\n' is a fixed piece anyway
    lines = itertools.islice((line for doc in docs for line in doc.split("\n") if line), TRAIN_LINES)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines, model_writer=model, model_type="bpe", vocab_size=vocab_size,
            byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=False, allow_whitespace_only_pieces=True, user_defined_symbols=["\n"],
            character_coverage=0.9999, max_sentence_length=1 << 14, input_sentence_size=0,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    except RuntimeError as e:
        raise DataError(f"--vocab_size {vocab_size}: sentencepiece cannot train it here ({_why(e)})") from None
    return model.getvalue()


# -----------------------------------------------------------------------------
# token files: a 64-byte header of int64s, then the ids as little-endian uint16 (uint32 for big vocabularies)

HEADER_BYTES = 64
MAGIC = int.from_bytes(b"nanotok\0", "little")
VERSION = 1


def token_dtype(vocab_size):
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def write_tokens(path, tokens, vocab_size, n_bytes, fingerprint):
    """Header + ids, atomically: a reader sees the old file or the whole new one, never a part."""
    path, dtype, tokens = Path(path), token_dtype(vocab_size), np.asarray(tokens)
    if len(tokens) and not 0 <= tokens.min() <= tokens.max() < vocab_size:
        raise DataError(f"{path}: ids {tokens.min()}..{tokens.max()} do not fit the vocabulary 0..{vocab_size - 1}")
    header = np.array([MAGIC, VERSION, dtype.itemsize, vocab_size, len(tokens), n_bytes, fingerprint, 0], "<i8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder, so that os.replace is a rename
    try:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(np.ascontiguousarray(tokens, dtype=dtype).data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_info(path):
    """The checked header of a token file: version, vocab_size, n_tokens, n_bytes, fingerprint, dtype."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such token file; prepare the data first with `python data.py` (see --help)")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise DataError(f"{path}: {size} bytes, too short for a token file; prepare it again with `python data.py`")
    magic, version, itemsize, vocab_size, n_tokens, n_bytes, fingerprint, _ = np.fromfile(path, "<i8", 8).tolist()
    if magic != MAGIC:  # e.g. nanoGPT's train.bin: bare uint16 ids, no header
        raise DataError(f"{path}: no token-file header; it looks like a raw headerless file of ids (nanoGPT's "
                        f"train.bin?): convert it with `python data.py --from_raw TRAIN.bin VAL.bin --vocab_size V`")
    if version != VERSION or itemsize not in (2, 4):
        raise DataError(f"{path}: not a version-{VERSION} token file (magic {magic:#x}, version {version}, "
                        f"{itemsize}-byte ids; expected {MAGIC:#x}, {VERSION}, 2 or 4)")
    if size != HEADER_BYTES + n_tokens * itemsize:
        raise DataError(f"{path}: the header says {n_tokens} tokens, {HEADER_BYTES + n_tokens * itemsize} bytes, "
                        f"but the file has {size}; it is truncated or corrupt, prepare it again")
    return dict(version=version, vocab_size=vocab_size, n_tokens=n_tokens, n_bytes=n_bytes,
                fingerprint=fingerprint, dtype=np.dtype(f"<u{itemsize}"))


def read_tokens(path, vocab_size=None, fingerprint=None):
    """Memory-map the ids of a token file, after checking its header against the caller's model/tokenizer."""
    info = file_info(path)
    if vocab_size is not None and info["vocab_size"] != vocab_size:
        raise DataError(f"{path}: token file vocabulary {info['vocab_size']} does not match the model/tokenizer "
                        f"vocabulary {vocab_size}")
    if fingerprint is not None and info["fingerprint"] != fingerprint:
        raise DataError(f"{path}: token file tokenizer fingerprint {info['fingerprint']} does not match "
                        f"{fingerprint}: another tokenizer with the same vocabulary size")
    if info["n_tokens"] == 0:  # mmap cannot map zero bytes
        return np.zeros(0, info["dtype"])
    return np.memmap(path, info["dtype"], mode="r", offset=HEADER_BYTES, shape=(info["n_tokens"],))


# -----------------------------------------------------------------------------
# corpora: each returns (documents, number of files skipped as not UTF-8)

def read_text(path):
    try:  # bytes, not read_text(): universal newlines would turn '\r\n' into '\n'
        return Path(path).read_bytes().decode("utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def stdlib_documents():
    """Every .py file of this Python's standard library, one document each, in path order (~1.8k files, ~31 MB)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = [p for p in root.rglob("*.py") if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts)]
    texts = [read_text(p) for p in sorted(paths, key=lambda p: p.relative_to(root).as_posix())]
    return [t for t in texts if t is not None], texts.count(None)


def read_documents(inputs, text_field="text"):
    """Files, folders (recursive, hidden entries skipped) and globs. A .jsonl line is one document (its
    text_field); a .txt file is one document, or several separated by '<|endoftext|>'; any other file is one."""
    files = []
    for item in inputs:
        matches = sorted(glob.glob(item, recursive=True)) if any(c in item for c in "*?[") else [item]
        if not matches or not Path(matches[0]).exists():
            raise DataError(f"--input {item}: no such file, folder or matching glob")
        for m in map(Path, matches):
            files += sorted(f for f in m.rglob("*") if f.is_file() and not any(
                part.startswith(".") for part in f.relative_to(m).parts)) if m.is_dir() else [m]
    progress, texts = Progress("reading --input", len(files), " files"), []
    for k, f in enumerate(files):
        texts.append(read_text(f))
        progress.update(k + 1)
    docs = []
    for f, text in zip(files, texts):
        if text is not None and f.suffix == ".jsonl":  # split("\n"), not splitlines(): JSON may hold a raw U+2028
            docs += [_json_text(f, k, line, text_field) for k, line in enumerate(text.split("\n"), 1) if line.strip()]
        elif text is not None:
            docs += [part.strip("\n") for part in text.split(EOT)] if f.suffix == ".txt" and EOT in text else [text]
    return docs, texts.count(None)


def _json_text(path, lineno, line, text_field):
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
        found = ", ".join(row) if isinstance(row, dict) else type(row).__name__
        raise DataError(f"{path}:{lineno}: no text field {text_field!r} (found: {found}); choose it with --text_field")
    return row[text_field]


def source_documents(source, max_docs=None):
    """Downloadable sets: the only part that needs the network. `datasets` is imported only here."""
    try:
        if source == "shakespeare":
            import urllib.request
            text = urllib.request.urlopen(SHAKESPEARE_URL, timeout=30).read().decode("utf-8")
            # one 1 MB script: cut into 100 pieces at line ends, so that the split has documents to choose from
            lines = text.splitlines(keepends=True)
            step = -(-len(lines) // 100)
            return ["".join(lines[i:i + step]) for i in range(0, len(lines), step)][:max_docs], 0
        import datasets
        repo, config, default_max = SOURCES[source]
        rows = datasets.load_dataset(repo, config, split="train", streaming=True)  # only what is taken is fetched
        return [row["text"] for row in itertools.islice(rows, max_docs or default_max)], 0
    except ImportError:
        raise DataError(f"--source {source} needs the `datasets` package: pip install datasets") from None
    except Exception as e:  # downloads fail in many ways (URLError, hub errors...); all mean the same here
        raise DataError(f"--source {source}: cannot download it ({_why(e)}); offline? use --input files") from None


# -----------------------------------------------------------------------------
def format_duration(seconds):
    """3m12s, 1h05m, 45s: for ETAs and progress lines."""
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Progress of long work outside the training loop: 'label: done/total unit (share), elapsed, eta', on rank 0,
    at most one line every `every` seconds (so logs stay short) and, after a long job, once at the end."""

    def __init__(self, label, total, unit="", every=10.0):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.t0 = self.shown = time.perf_counter()
        self.quiet = int(os.environ.get("RANK", 0)) != 0

    def update(self, done):
        now = time.perf_counter()
        # the closing line only after a long job: short ones stay silent
        if self.quiet or not (now - self.shown >= self.every or (done >= self.total and now - self.t0 >= self.every)):
            return
        self.shown, elapsed = now, now - self.t0
        eta = elapsed / done * (self.total - done) if done else 0.0
        print(f"{self.label}: {done:,}/{self.total:,}{self.unit} ({done / max(1, self.total):.0%}), "
              f"{format_duration(elapsed)}, eta {format_duration(eta)}", flush=True)


# prepare: documents -> train/val split -> tokenizer -> token files

_worker_tokenizer = None  # set in each tokenizing process


def _init_worker(spec):
    global _worker_tokenizer
    _worker_tokenizer = Tokenizer(spec)  # once per process: loading a vocabulary costs more than a document


def _encode_docs(docs):
    """[eot] + ids of each document, concatenated: the separator comes first, like a BOS."""
    tok = _worker_tokenizer
    ids = [i for doc in tok.encode_batch(docs) for i in itertools.chain((tok.eot_id,), doc)]
    return np.array(ids, token_dtype(tok.vocab_size))


def tokenize(docs, spec, num_proc, label):
    """(tokens, UTF-8 bytes) of a list of documents, encoded by num_proc processes. Each document is encoded
    on its own and the chunks come back in order, so the tokens are the same for any num_proc."""
    sizes = [len(d.encode("utf-8")) for d in docs]
    # up to 64 documents a chunk save inter-process traffic; small corpora get 4 chunks a process to keep all busy
    step = max(1, min(64, len(docs) // (4 * num_proc)))
    chunks = [docs[i:i + step] for i in range(0, len(docs), step)]
    if num_proc == 1:
        _init_worker(spec)
    parts, done, t0, shown = [], 0, time.time(), 0.0
    with multiprocessing.Pool(num_proc, _init_worker, (spec,)) if num_proc > 1 else contextlib.nullcontext() as pool:
        for k, part in enumerate(pool.imap(_encode_docs, chunks) if pool else map(_encode_docs, chunks)):
            parts.append(part)
            done += sum(sizes[k * step:(k + 1) * step])
            if time.time() - shown > 0.25 or k == len(chunks) - 1:  # a progress line, rewritten in place
                shown = time.time()
                print(f"\r{label}: {done / 1e6:.1f}/{sum(sizes) / 1e6:.1f} MB, "
                      f"{done / 1e6 / max(shown - t0, 1e-6):.1f} MB/s", end="\n" if k == len(chunks) - 1 else "",
                      file=sys.stderr, flush=True)
    return np.concatenate(parts), sum(sizes)


def prepare(inputs=None, out_dir="data", name=None, tokenizer=None, vocab_size=8192, val_fraction=0.05,
            num_proc=None, seed=1337, source=None, text_field="text", max_docs=None):
    """Write <out_dir>/<name>/{train.bin, val.bin, meta.json} (+ tokenizer.model when one is trained) and return
    the meta. With neither inputs nor source, the corpus is this Python's standard library."""
    args, t0 = dict(locals()), time.time()  # args go into meta.json, so that the data can be made again
    problems = [f"--val_fraction {val_fraction} must lie strictly between 0 and 1"] if not 0 < val_fraction < 1 else []
    if tokenizer is None and not 260 <= vocab_size <= 1 << 20:
        problems.append(f"--vocab_size {vocab_size} must lie in 260..{1 << 20} (256 bytes and 4 special pieces)")
    if num_proc is not None and num_proc < 1:
        problems.append(f"--num_proc {num_proc} must be at least 1")
    if source not in (None, "shakespeare", *SOURCES) or (inputs and source):
        problems.append(f"--source {source}: choose one of shakespeare, {', '.join(SOURCES)}, and no --input with it")
    try:  # a bad tokenizer name or file fails now, not after the corpus is read
        if tokenizer is not None:
            Tokenizer(tokenizer)
    except DataError as e:
        problems.append(str(e))
    if problems:  # every problem at once, before any long work
        raise DataError("; ".join(problems))
    num_proc = num_proc or os.cpu_count() or 1
    name = name or source or (Path(inputs[0].split("*")[0]).resolve().stem if inputs else "stdlib")
    what = f"--source {source}" if source else f"--input {' '.join(inputs)}" if inputs else "stdlib *.py"
    docs, skipped = (source_documents(source, max_docs) if source else
                     read_documents(inputs, text_field) if inputs else stdlib_documents())
    n_empty, docs = sum(not d for d in docs), [d for d in docs if d]
    if len(docs) < 2:
        raise DataError(f"{what}: {len(docs)} non-empty documents ({n_empty} empty, {skipped} files not UTF-8); "
                        "a train/val split needs at least 2")
    # split by document, in seeded random order: a sequential reader then meets mixed topics, not one folder
    order = np.random.default_rng(seed).permutation(len(docs))
    n_val = min(len(docs) - 1, max(1, round(val_fraction * len(docs))))
    splits = {"train": [docs[i] for i in order[n_val:]], "val": [docs[i] for i in order[:n_val]]}

    data_dir = Path(out_dir) / name
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "meta.json").unlink(missing_ok=True)  # written last: its presence says the rest is complete
    t_tok, spec = time.time(), tokenizer
    if tokenizer is None:  # a fresh BPE, learned from the train split only
        print(f"{name}: training a {vocab_size}-piece BPE on {len(splits['train'])} train documents (one process) ...",
              flush=True)
        spec = "tokenizer.model"
        (data_dir / spec).write_bytes(train_sentencepiece(splits["train"], vocab_size))
    elif tokenizer.endswith((".model", ".tiktoken")):  # copied in, so that the data folder stands alone
        spec = "tokenizer" + Path(tokenizer).suffix
        extras = Path(tokenizer + ".json")  # a .tiktoken's regex and specials go with it (tiktoken_extras)
        extras = extras.read_bytes() if extras.is_file() else None  # read first: they may be these very files
        (data_dir / spec).write_bytes(Path(tokenizer).read_bytes())
        if extras:
            (data_dir / (spec + ".json")).write_bytes(extras)
        else:  # not another tokenizer's, left from an earlier run
            (data_dir / (spec + ".json")).unlink(missing_ok=True)
    tok, t_tok = load_tokenizer(data_dir, spec), time.time() - t_tok

    meta = dict(name=name, tokenizer=spec, vocab_size=tok.vocab_size, eot_id=tok.eot_id,
                fingerprint=tok.fingerprint, dtype=token_dtype(tok.vocab_size).name)
    t_enc = time.time()
    for split, split_docs in splits.items():
        tokens, n_bytes = tokenize(split_docs, tok.name, num_proc, f"{name}/{split}")
        write_tokens(data_dir / f"{split}.bin", tokens, tok.vocab_size, n_bytes, tok.fingerprint)
        meta[split] = dict(documents=len(split_docs), tokens=len(tokens), bytes=n_bytes,
                           tokens_per_byte=round(len(tokens) / n_bytes, 6))
    t_enc, meta["args"] = time.time() - t_enc, args
    (data_dir / ".meta.json.tmp").write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(data_dir / ".meta.json.tmp", data_dir / "meta.json")

    mb = (meta["train"]["bytes"] + meta["val"]["bytes"]) / 1e6
    print(f"{what}: {len(docs)} documents, {mb:.1f} MB ({n_empty} empty, {skipped} non-UTF-8 files skipped); "
          f"tokenizer {spec}, {tok.vocab_size} ids, {'trained' if tokenizer is None else 'loaded'} in {t_tok:.1f} s")
    for split, m in (("train", meta["train"]), ("val", meta["val"])):
        print(f"  {data_dir / split}.bin: {m['documents']} documents, {m['tokens']:,} tokens, "
              f"{m['tokens_per_byte']:.3f} tokens/byte")
    print(f"wrote {data_dir}/ in {time.time() - t0:.1f} s (tokenized at {mb / t_enc:.1f} MB/s, num_proc={num_proc})")
    return meta


def from_raw(train_file, val_file, vocab_size, out_dir="data", name=None, tokenizer=None, raw_dtype="uint16"):
    """Token files of another tool (nanoGPT's train.bin / val.bin: bare little-endian ids, no header) as a data
    folder of this repository. With --tokenizer (the one that made the ids), meta.json names it and the headers
    hold the exact UTF-8 byte counts, so bits per byte works; without one the bytes are unknown (0). The ids
    are memory-mapped and checked in chunks, so a file larger than memory converts."""
    dtype = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}.get(raw_dtype)
    problems = [] if dtype else [f"--raw_dtype {raw_dtype}: choose uint16 (nanoGPT) or uint32"]
    problems += [f"--vocab_size {vocab_size} must be positive"] if vocab_size < 1 else []
    tok = None
    try:
        tok = Tokenizer(tokenizer) if tokenizer else None
    except DataError as e:
        problems.append(str(e))
    if tok and tok.vocab_size != vocab_size:
        problems.append(f"--vocab_size {vocab_size} differs from --tokenizer {tokenizer}'s {tok.vocab_size} ids")
    for path in (train_file, val_file):
        if not Path(path).is_file():
            problems.append(f"--from_raw {path}: no such file")
        elif dtype and Path(path).stat().st_size % dtype.itemsize:
            problems.append(f"--from_raw {path}: {Path(path).stat().st_size} bytes is no whole number of {raw_dtype} ids")
    if problems:
        raise DataError("; ".join(problems))
    data_dir = Path(out_dir) / (name or Path(train_file).resolve().parent.name)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "meta.json").unlink(missing_ok=True)  # written last: its presence says the rest is complete
    spec = None
    if tok and tokenizer.endswith((".model", ".tiktoken")):  # copied in, so that the folder stands alone
        spec = "tokenizer" + Path(tokenizer).suffix
        (data_dir / spec).write_bytes(Path(tokenizer).read_bytes())
    elif tok:
        spec = tokenizer
    meta = dict(name=data_dir.name, tokenizer=spec, vocab_size=vocab_size, eot_id=tok.eot_id if tok else None,
                fingerprint=tok.fingerprint if tok else 0, dtype=token_dtype(vocab_size).name,
                args=dict(from_raw=[str(train_file), str(val_file)], raw_dtype=raw_dtype, tokenizer=tokenizer))
    for split, path in (("train", train_file), ("val", val_file)):
        ids = np.memmap(path, dtype, mode="r") if Path(path).stat().st_size else np.zeros(0, dtype)
        n_bytes = 0
        for start in range(0, len(ids), 1 << 24):  # chunks: range check and byte count in bounded memory
            chunk = np.asarray(ids[start:start + (1 << 24)], np.int64)
            if chunk.max() >= vocab_size:
                raise DataError(f"--from_raw {path}: id {chunk.max()} does not fit --vocab_size {vocab_size}")
            n_bytes += int(tok.token_bytes[chunk].sum()) if tok else 0
        out = ids if dtype == token_dtype(vocab_size) else ids.astype(token_dtype(vocab_size))
        write_tokens(data_dir / f"{split}.bin", out, vocab_size, n_bytes, meta["fingerprint"])
        meta[split] = dict(tokens=len(ids), bytes=n_bytes, tokens_per_byte=round(len(ids) / n_bytes, 6) if n_bytes else None)
        print(f"  {data_dir / split}.bin: {len(ids):,} tokens" + (f", {n_bytes:,} bytes of text" if tok else ""))
    (data_dir / ".meta.json.tmp").write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(data_dir / ".meta.json.tmp", data_dir / "meta.json")
    print(f"wrote {data_dir}/ from raw ids" + ("" if tok else " (no --tokenizer: bits per byte unknown)"))
    return meta


def load_meta(data_dir):
    try:  # missing, or empty / cut short by an interrupted copy: one clear line either way
        return json.loads((Path(data_dir) / "meta.json").read_text())
    except (OSError, ValueError):
        raise DataError(f"{Path(data_dir) / 'meta.json'}: not found or not JSON; prepare the data with `python data.py`") from None


def load_tokenizer(data_dir, spec=None):
    """The tokenizer named in <data_dir>/meta.json (or by spec); its file names are relative to data_dir."""
    spec = spec or load_meta(data_dir)["tokenizer"]
    if not spec:  # e.g. converted --from_raw without --tokenizer
        raise DataError(f"{Path(data_dir) / 'meta.json'} names no tokenizer")
    return Tokenizer(Path(data_dir) / spec if spec.endswith((".model", ".tiktoken")) else spec)


# -----------------------------------------------------------------------------
# batches: windows of seq_len + 1 tokens; inputs are [:, :-1], targets [:, 1:]

def _windows(tokens, starts, seq_len):
    return torch.from_numpy(np.stack([np.asarray(tokens[s:s + seq_len + 1], dtype=np.int64) for s in starts]))


def _too_short(tokens, need, what):
    name = getattr(tokens, "filename", None) or "token array"
    return DataError(f"{name}: {len(tokens):,} tokens, fewer than {what} needs ({need:,})")


def random_batch(tokens, batch_size, seq_len, generator):
    """[batch_size, seq_len + 1] windows at uniformly random offsets (nanoGPT style); generator makes it repeatable."""
    if len(tokens) < seq_len + 1:
        raise _too_short(tokens, seq_len + 1, "one window of seq_len + 1")
    return _windows(tokens, torch.randint(len(tokens) - seq_len, (batch_size,), generator=generator).tolist(), seq_len)


class BatchStream:
    """Sequential, rank-sharded, resumable reader. The global batch of one optimizer step is `rows` consecutive
    windows of seq_len + 1 tokens, window j starting at position + j * seq_len (windows overlap by one token, the
    target of the last input). Row j is read by rank r at micro-step m when j // micro_rows == m * world + r.
    So the same global batch is read whatever the world size / accumulation split."""

    def __init__(self, tokens, micro_rows, seq_len, rank=0, world=1, accum=1, position=0):
        assert 0 <= rank < world and micro_rows >= 1 and seq_len >= 1 and accum >= 1
        self.tokens, self.micro_rows, self.seq_len = tokens, micro_rows, seq_len
        self.rank, self.world, self.accum = rank, world, accum
        self.rows = micro_rows * accum * world
        self.step_tokens = self.rows * seq_len  # how far one optimizer step moves
        if len(tokens) < self.step_tokens + 1:
            raise _too_short(tokens, self.step_tokens + 1, f"one global batch of {self.rows} rows x {seq_len} + 1")
        self.position, self.epoch, self.micro = position, 0, 0
        self._wrap()

    def _wrap(self):
        # a batch that would run past the end is skipped whole, so that every world size sees the same epochs
        if self.position + self.step_tokens + 1 > len(self.tokens):
            self.position, self.epoch = 0, self.epoch + 1

    def next_micro(self):
        """[micro_rows, seq_len + 1]: this rank's rows of the current global batch at micro-step self.micro."""
        start = self.position + (self.micro * self.world + self.rank) * self.micro_rows * self.seq_len
        block = np.asarray(self.tokens[start:start + self.micro_rows * self.seq_len + 1], dtype=np.int64)
        rows = torch.from_numpy(block).unfold(0, self.seq_len + 1, self.seq_len).contiguous()
        self.micro += 1
        if self.micro == self.accum:  # every rank moves on by the whole global batch
            self.micro, self.position = 0, self.position + self.step_tokens
            self._wrap()
        return rows

    def state_dict(self):
        assert self.micro == 0, "save the data position between optimizer steps, not inside one"
        return dict(position=self.position, epoch=self.epoch)

    def load_state_dict(self, state):
        self.position, self.epoch, self.micro = int(state["position"]), int(state["epoch"]), 0
        self._wrap()  # a checkpoint of a run with a smaller batch may point past the last batch that fits now


def eval_windows(tokens, micro_rows, seq_len, max_tokens, rank=0, world=1):
    """Batches of up to micro_rows sequential windows over the first min(max_tokens, len) tokens (a tail shorter
    than seq_len is left out). Rank r takes windows r, r + world, ...: the union is the same for any world size,
    but ranks may get different numbers of batches, so reduce the sums once, after the loop."""
    n_windows = (min(max_tokens, len(tokens)) - 1) // seq_len
    if n_windows < 1:
        raise _too_short(tokens[:max_tokens], seq_len + 1, "one window of seq_len + 1")
    mine = range(rank, n_windows, world)
    for i in range(0, len(mine), micro_rows):
        yield _windows(tokens, [w * seq_len for w in mine[i:i + micro_rows]], seq_len)


def main():
    from train import HelpFormatter, given  # here, not at the top: train.py imports this module
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--input", dest="inputs", nargs="+", metavar="PATH",
                        help="files, folders (recursive) or globs: .txt (split at <|endoftext|>), .jsonl, other text; "
                             "default: the .py files of Python's standard library")
    parser.add_argument("--source", choices=["shakespeare", *SOURCES], help="download a known data set instead "
                        "(default: none)")
    parser.add_argument("--text_field", default="text", help="the JSON field that holds the text in .jsonl files")
    parser.add_argument("--max_docs", type=int, help="take at most this many documents from --source (default: all, "
                        "or the source's own cap)")
    parser.add_argument("--tokenizer", help="gpt2 (or another tiktoken name), a .tiktoken or a sentencepiece .model "
                                            "file; default: train a sentencepiece BPE on the train split")
    parser.add_argument("--vocab_size", type=int, default=8192, help="pieces of the trained tokenizer")
    parser.add_argument("--val_fraction", type=float, default=0.05, help="share of documents held out for validation")
    parser.add_argument("--num_proc", type=int, help="tokenizing processes (default: every CPU core)")
    parser.add_argument("--out_data_dir", help="the data folder to write; its last part names the data set "
                        "(default: data/<the source, the first input's name, or stdlib>)")
    parser.add_argument("--out_dir", help="old form of --out_data_dir: the data set goes into OUT_DIR/NAME/ "
                        "(default: data)")
    parser.add_argument("--name", help="old form of --out_data_dir: the data set's name (default: the source, the "
                        "first input's name, or stdlib)")
    parser.add_argument("--seed", type=int, default=1337, help="seed of the train/val split by document")
    parser.add_argument("--from_raw", nargs=2, metavar=("TRAIN", "VAL"), help="instead: convert two raw headerless id "
                        "files (nanoGPT's train.bin val.bin) into the data folder; needs --vocab_size, --tokenizer "
                        "optional")
    parser.add_argument("--raw_dtype", default="uint16", help="--from_raw: the ids' type, uint16 (nanoGPT) or uint32")
    args = vars(parser.parse_args())
    raw, raw_dtype, out_data_dir = args.pop("from_raw"), args.pop("raw_dtype"), args.pop("out_data_dir")
    # flags that would be ignored, and two spellings of one folder: one line each, as for every other mistake
    ignored = [f for f, unused in (("--max_docs", not args["source"]), ("--text_field", not args["inputs"]),
                                   ("--raw_dtype", not raw)) if unused and given(f)]
    if ignored:
        why = {"--max_docs": "without --source", "--text_field": "without --input", "--raw_dtype": "without --from_raw"}
        problem = "; ".join(f"{f} does not apply {why[f]}" for f in ignored)
    elif out_data_dir and (args["out_dir"] or args["name"]):
        problem = "give --out_data_dir, or the old --out_dir and --name, not both"
    else:
        problem = None
    if out_data_dir:
        args["out_dir"], args["name"] = os.path.dirname(out_data_dir.rstrip("/")) or ".", os.path.basename(out_data_dir.rstrip("/"))
    args["out_dir"] = args["out_dir"] or "data"
    try:
        if problem:
            raise DataError(problem)
        if raw:
            return from_raw(*raw, args["vocab_size"], args["out_dir"], args["name"], args["tokenizer"], raw_dtype)
        prepare(**args)
    except (DataError, OSError) as e:  # OSError: e.g. --out_dir is a file, or the disk is full
        print(f"data.py: error: {e}", file=sys.stderr)
        sys.exit(2)  # as argparse and the other scripts do for bad input


if __name__ == "__main__":
    main()
