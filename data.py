"""
Token data for pre-training: tokenizers, token files and the batch readers that train.py uses.

Prepare a data set (writes data/<name>/train.bin, val.bin, meta.json, and tokenizer.model when one
is trained):
    python data.py  # Python's own stdlib sources, a fresh 8192-piece BPE, no download
    python data.py --input notes/ --tokenizer gpt2  # your .txt/.jsonl (folders, globs), GPT-2 ids
    python data.py --source shakespeare  # a downloadable set (internet; some need `datasets`)
Read it back:
    tokens = read_tokens("data/stdlib/train.bin", vocab_size=model_vocab_size)
    stream = BatchStream(tokens, micro_rows=8, seq_len=256, rank=rank, world=world, accum=accum)
For transformers (train.py --export_hf uses it): save_hf_tokenizer(data_dir, folder).
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
# lines the BPE learns from: ~7 s on the stdlib; all 730k barely change tokens/byte
TRAIN_LINES = 500_000
SHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                   "tinyshakespeare/input.txt")
# --source -> (Hugging Face data set, config, documents taken unless --max_docs says otherwise)
SOURCES = {
    "tinystories": ("roneneldan/TinyStories", None, None),
    # a sample: ~100M GPT-2 tokens, not 10B
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample-10BT", 100_000),
}


class DataError(ValueError):
    """Bad input or bad data on disk. The message is one line naming the file or flag and what would
    be valid."""


def _why(e):
    """Last line of a library's error, without the C++ file and check that sentencepiece puts in
    front."""
    last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
    return last.rsplit("] ", 1)[-1].rstrip(")>\"'")


# -----------------------------------------------------------------------------
# tokenizers

class Tokenizer:
    """One face for tiktoken encodings (a name or a .tiktoken rank file) and sentencepiece .model
    files."""

    def __init__(self, spec):
        self.name = spec = str(spec)
        self._sp = self._tt = None
        names, is_file = tiktoken.list_encoding_names(), spec.endswith((".model", ".tiktoken"))
        if not is_file and spec not in names:
            raise DataError(f"unknown tokenizer {spec!r}: expected a tiktoken encoding name "
                            f"({', '.join(names)}), a .tiktoken rank file or a sentencepiece "
                            ".model file")
        if is_file and not Path(spec).is_file():
            raise DataError(f"tokenizer file {spec} does not exist")
        try:
            if spec.endswith(".model"):
                # the bytes are kept: they are the fingerprint, and what the Hugging Face export
                # copies
                self._model_bytes = Path(spec).read_bytes()
                self._sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)
            elif spec.endswith(".tiktoken"):
                ranks = load_tiktoken_bpe(spec)
                pat_str, specials = tiktoken_extras(spec, len(ranks))
                self._tt = tiktoken.Encoding(Path(spec).stem, pat_str=pat_str,
                                             mergeable_ranks=ranks, special_tokens=specials)
            else:
                self._tt = tiktoken.get_encoding(spec)
        except (ValueError, OSError, RuntimeError, KeyError) as e:
            # a malformed file, or offline with nothing cached
            raise DataError(f"tokenizer {spec}: cannot load it ({_why(e)}); a tiktoken name needs "
                            "the internet once, or its files in $TIKTOKEN_CACHE_DIR") from None
        if self._tt is not None:
            if EOT not in self._tt._special_tokens:
                raise DataError(f"tokenizer {spec}: it has no {EOT} special token to separate "
                                "documents with")
            self.vocab_size, self.eot_id = self._tt.n_vocab, self._tt.eot_token
            return
        # the separator goes before every document, so BOS is the natural choice
        self.vocab_size, self.eot_id = self._sp.get_piece_size(), self._sp.bos_id()
        if self.eot_id < 0:
            raise DataError(f"{spec}: the sentencepiece model has no BOS piece to separate "
                            "documents with")
        # a literal '▁' would decode as a space; its UTF-8 byte pieces decode verbatim (when
        # byte_fallback is on)
        self._space_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in SP_SPACE.encode()]

    @functools.cached_property
    def fingerprint(self):
        """sha256 of the vocabulary, cut to a non-negative int63 so that it fits the int64 file
        header."""
        h = hashlib.sha256(getattr(self, "_model_bytes", b""))
        # another split gives other ids for a text (GPT-2's adds nothing, so older fingerprints
        # stay valid)
        if self._tt is not None and self._tt._pat_str != r50k_pat_str:
            h.update(self._tt._pat_str.encode())
        # the bytes of each id, in id order
        for i in range(self.vocab_size if self._tt is not None else 0):
            # some encodings leave ids unused between ranks and specials
            with contextlib.suppress(KeyError):
                piece = self._tt.decode_single_token_bytes(i)
                h.update(b"%d %d " % (i, len(piece)) + piece)
        return int.from_bytes(h.digest()[:8], "little") >> 1

    @functools.cached_property
    def token_bytes(self):
        """UTF-8 bytes of each id's text, int64 [vocab_size]; special and control ids count 0.
        Summed over the scored targets it gives the exact byte count that bits per byte divides by
        (nanochat's token_bytes)."""
        n = np.zeros(self.vocab_size, np.int64)
        if self._tt is not None:
            specials = set(self._tt._special_tokens.values())
            for i in range(self.vocab_size):
                # ids left unused between ranks and specials count 0
                with contextlib.suppress(KeyError):
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
        """Ids of each text, no special tokens."""
        if self._tt is not None:
            return [self._tt.encode_ordinary(t) for t in texts]
        # one sentencepiece call per list saves its per-call overhead; one thread, since the
        # parallelism comes from processes
        out = self._sp.encode(list(texts), num_threads=1)
        for k, text in enumerate(texts):
            if SP_SPACE in text and self._sp.unk_id() not in self._space_ids:
                # sentencepiece would read a literal '▁' as a space: encode around it, and put in
                # its three UTF-8 byte pieces
                parts = self._sp.encode(text.split(SP_SPACE), num_threads=1)
                out[k] = parts[0] + [i for part in parts[1:] for i in self._space_ids + part]
        return out

    def decode(self, ids):
        ids = np.asarray(ids).reshape(-1).tolist()
        return self._tt.decode(ids) if self._tt is not None else self._sp.decode(ids)


def tiktoken_extras(rank_file, n_ranks):
    """(pre-split regex, special tokens) of a .tiktoken rank file, from FILE.json beside it when
    there is one ({"pat_str": ..., "special_tokens": {name: id}}, as prune_tokenizer writes for a
    non-GPT-2 source)."""
    about = Path(str(rank_file) + ".json")
    if not about.is_file():
        # a bare rank file says nothing of either: GPT-2's regex, and <|endoftext|> right after the
        # last rank
        return r50k_pat_str, {EOT: n_ranks}
    extras = json.loads(about.read_text())
    return extras["pat_str"], {name: int(i) for name, i in extras["special_tokens"].items()}


def train_sentencepiece(docs, vocab_size):
    """A byte-fallback BPE that round-trips any text: identity normalization, no dummy prefix,
    spaces kept (runs of them may be pieces, for indentation), '\\n' a piece of its own, unknown
    characters as UTF-8 bytes. Deterministic."""
    # sentencepiece learns from 'sentences' and skips long ones, so it gets lines; '\n' is a fixed
    # piece anyway. The lines go in a fixed order, and one thread merges: with two, the merges
    # differ
    lines = itertools.islice((line for doc in docs for line in doc.split("\n") if line),
                             TRAIN_LINES)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines, model_writer=model, model_type="bpe", vocab_size=vocab_size,
            byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=False, allow_whitespace_only_pieces=True, user_defined_symbols=["\n"],
            character_coverage=0.9999, max_sentence_length=1 << 14, input_sentence_size=0,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    except RuntimeError as e:
        raise DataError(f"--vocab_size {vocab_size}: sentencepiece cannot train it here "
                        f"({_why(e)})") from None
    return model.getvalue()


# -----------------------------------------------------------------------------
# token files: a 64-byte header of int64s, then the ids as little-endian uint16 (uint32 for big
# vocabularies); the reader checks the header before it trusts the bytes

HEADER_BYTES = 64
MAGIC = int.from_bytes(b"nanotok\0", "little")
VERSION = 1


def token_dtype(vocab_size):
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class TokenWriter:
    """A token file written piece by piece, atomically: a reader sees the old file or the whole new
    one."""

    def __init__(self, path, vocab_size, fingerprint):
        self.path, self.vocab_size, self.fingerprint = Path(path), vocab_size, fingerprint
        self.dtype, self.n_tokens, self.n_bytes = token_dtype(vocab_size), 0, 0
        # the ids go to a temp file in the same folder, so that os.replace is a rename
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")

    def __enter__(self):
        self.file = open(self.tmp, "wb")
        self.file.write(bytes(HEADER_BYTES))  # counts unknown yet
        return self

    def write(self, tokens):
        tokens = np.asarray(tokens)
        if len(tokens) and not 0 <= tokens.min() <= tokens.max() < self.vocab_size:
            raise DataError(f"{self.path}: ids {tokens.min()}..{tokens.max()} do not fit the "
                            f"vocabulary 0..{self.vocab_size - 1}")
        self.file.write(np.ascontiguousarray(tokens, dtype=self.dtype).data)
        self.n_tokens += len(tokens)

    def __exit__(self, kind, *_):
        try:
            # only a clean exit fills in the header's counts and renames the file into place; an
            # exception leaves the old file as it was
            if kind is None:
                self.file.seek(0)
                self.file.write(np.array([MAGIC, VERSION, self.dtype.itemsize, self.vocab_size,
                                          self.n_tokens, self.n_bytes, self.fingerprint, 0],
                                         "<i8").tobytes())
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            if kind is None:
                os.replace(self.tmp, self.path)
        finally:
            self.file.close()
            self.tmp.unlink(missing_ok=True)


def write_tokens(path, tokens, vocab_size, n_bytes, fingerprint):
    """Header + ids, atomically: a reader sees the old file or the whole new one, never a part."""
    with TokenWriter(path, vocab_size, fingerprint) as w:
        w.write(tokens)
        w.n_bytes = n_bytes


def file_info(path):
    """The checked header of a token file: version, vocab_size, n_tokens, n_bytes, fingerprint,
    dtype."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such token file; prepare the data first with `python data.py` "
                        "(see --help)")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise DataError(f"{path}: {size} bytes, too short for a token file; prepare it again with "
                        "`python data.py`")
    header = np.fromfile(path, "<i8", 8).tolist()
    magic, version, itemsize, vocab_size, n_tokens, n_bytes, fingerprint, _ = header
    if magic != MAGIC:  # e.g. nanoGPT's train.bin: bare uint16 ids, no header
        raise DataError(f"{path}: no token-file header; it looks like a raw headerless file of ids "
                        f"(nanoGPT's train.bin?): convert it with `python data.py --from_raw "
                        f"TRAIN.bin VAL.bin --vocab_size V`")
    if version != VERSION or itemsize not in (2, 4):
        raise DataError(f"{path}: not a version-{VERSION} token file (magic {magic:#x}, version "
                        f"{version}, {itemsize}-byte ids; expected {MAGIC:#x}, {VERSION}, 2 or 4)")
    # a size check catches a file cut short by a copy, which would otherwise read as fewer tokens
    if size != HEADER_BYTES + n_tokens * itemsize:
        raise DataError(f"{path}: the header says {n_tokens} tokens, "
                        f"{HEADER_BYTES + n_tokens * itemsize} bytes, but the file has {size}; it "
                        f"is truncated or corrupt, prepare it again")
    return dict(version=version, vocab_size=vocab_size, n_tokens=n_tokens, n_bytes=n_bytes,
                fingerprint=fingerprint, dtype=np.dtype(f"<u{itemsize}"))


def read_tokens(path, vocab_size=None, fingerprint=None):
    """Memory-map the ids of a token file, after checking its header against the caller's
    model/tokenizer."""
    info = file_info(path)
    if vocab_size is not None and info["vocab_size"] != vocab_size:
        raise DataError(f"{path}: token file vocabulary {info['vocab_size']} does not match the "
                        f"model/tokenizer vocabulary {vocab_size}")
    # the same vocabulary size from another tokenizer would train silently on wrong ids
    if fingerprint is not None and info["fingerprint"] != fingerprint:
        raise DataError(f"{path}: token file tokenizer fingerprint {info['fingerprint']} does not "
                        f"match {fingerprint}: another tokenizer with the same vocabulary size")
    if info["n_tokens"] == 0:  # mmap cannot map zero bytes
        return np.zeros(0, info["dtype"])
    # memory-mapped: the OS pages in what the batches touch, whatever the file's size
    return np.memmap(path, info["dtype"], mode="r", offset=HEADER_BYTES, shape=(info["n_tokens"],))


# -----------------------------------------------------------------------------
# corpora: each returns (documents, number of files skipped as not UTF-8)

def read_text(path):
    try:  # bytes, not read_text(): universal newlines would turn '\r\n' into '\n'
        return Path(path).read_bytes().decode("utf-8")
    except (UnicodeDecodeError, OSError):
        return None


# a document is a whole file, a .jsonl line, or a part of a .txt between EOTs
WHOLE, LINE, PART = 0, 1, 2


class Corpus:
    """Non-empty documents as references into files (file, byte range, kind), read when asked for.
    texts: documents already in memory (downloads), referenced by index."""
    # references, not texts: preparing data then holds a chunk of documents at a time, not the
    # corpus

    def __init__(self, files, refs, text_field="text", texts=None):
        self.files, self.refs, self.text_field, self.texts = files, refs, text_field, texts

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        f, start, end, kind = (int(v) for v in self.refs[i])
        if self.texts is not None:
            return self.texts[start]
        if kind == WHOLE:
            return read_text(self.files[f])
        with open(self.files[f], "rb") as fh:
            fh.seek(start)
            raw = fh.read(end - start).decode("utf-8")
        return raw.strip("\n") if kind == PART else json.loads(raw)[self.text_field]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def subset(self, order):
        return Corpus(self.files, self.refs[np.asarray(order, dtype=np.int64)], self.text_field,
                      self.texts)

    @classmethod
    def of_texts(cls, texts):
        refs = np.array([(0, i, 0, WHOLE) for i in range(len(texts))], np.int64).reshape(-1, 4)
        return cls([], refs, texts=texts)


def stdlib_files():
    """Every .py file of this Python's standard library, in path order (~1.8k files, ~31 MB)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = [p for p in root.rglob("*.py")
             if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts)]
    # sorted by the relative path: the same corpus, in the same order, wherever Python lives
    return sorted(paths, key=lambda p: p.relative_to(root).as_posix())


def stdlib_documents():
    """The stdlib's .py files as documents, one each (in memory), and how many are not UTF-8."""
    texts = [read_text(p) for p in stdlib_files()]
    return [t for t in texts if t is not None], texts.count(None)


def input_files(inputs):
    """Files, folders (recursive, hidden entries skipped) and globs, in order."""
    files = []
    for item in inputs:
        is_glob = any(c in item for c in "*?[")
        matches = sorted(glob.glob(item, recursive=True)) if is_glob else [item]
        if not matches or not Path(matches[0]).exists():
            raise DataError(f"--input {item}: no such file, folder or matching glob")
        for m in map(Path, matches):
            files += sorted(f for f in m.rglob("*") if f.is_file() and not any(
                part.startswith(".") for part in f.relative_to(m).parts)) if m.is_dir() else [m]
    return files


def index_documents(files, text_field="text"):
    """(Corpus of the non-empty documents of files, empty documents, files that are not UTF-8),
    reading one file at a time: memory grows with the largest file, not with the corpus. A .jsonl
    line is one document (its text_field); a .txt file is one document, or several separated by
    '<|endoftext|>'; any other file is one."""
    refs, n_empty, skipped = [], 0, 0
    progress = Progress("reading the input", len(files), " files")
    for k, f in enumerate(files):
        progress.update(k + 1)
        raw = Path(f).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            skipped += 1
            continue
        if Path(f).suffix == ".jsonl":
            # split on b"\n", not splitlines(): JSON may hold a raw U+2028
            start = 0
            for lineno, line in enumerate(raw.split(b"\n"), 1):
                text = line.decode("utf-8")  # whole characters: '\n' never occurs inside one
                if text.strip():
                    if _json_text(f, lineno, text, text_field):
                        refs.append((k, start, start + len(line), LINE))
                    else:
                        n_empty += 1
                start += len(line) + 1
        elif Path(f).suffix == ".txt" and EOT in text:
            # EOT is ASCII: byte offsets split like the text
            start = 0
            for part in raw.split(EOT.encode()):
                if part.strip(b"\n"):
                    refs.append((k, start, start + len(part), PART))
                else:
                    n_empty += 1
                start += len(part) + len(EOT)
        elif text:
            refs.append((k, 0, len(raw), WHOLE))
        else:
            n_empty += 1
        del raw, text
    corpus = Corpus(list(map(str, files)), np.array(refs, np.int64).reshape(-1, 4), text_field)
    return corpus, n_empty, skipped


def read_documents(inputs, text_field="text"):
    """The non-empty documents of inputs (files, folders, globs) as a list, and how many files are
    not UTF-8."""
    corpus, _, skipped = index_documents(input_files(inputs), text_field)
    return list(corpus), skipped


def _json_text(path, lineno, line, text_field):
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
        found = ", ".join(row) if isinstance(row, dict) else type(row).__name__
        raise DataError(f"{path}:{lineno}: no text field {text_field!r} (found: {found}); "
                        "choose it with --text_field")
    return row[text_field]


def source_documents(source, max_docs=None):
    """Downloadable sets: the only part that needs the network. `datasets` is imported only here."""
    try:
        if source == "shakespeare":
            import urllib.request
            text = urllib.request.urlopen(SHAKESPEARE_URL, timeout=30).read().decode("utf-8")
            # one 1 MB script: cut into 100 pieces at line ends, so that the split has documents to
            # choose from
            lines = text.splitlines(keepends=True)
            step = -(-len(lines) // 100)
            return ["".join(lines[i:i + step]) for i in range(0, len(lines), step)][:max_docs], 0
        import datasets
        repo, config, default_max = SOURCES[source]
        # streaming: only what is taken is fetched
        rows = datasets.load_dataset(repo, config, split="train", streaming=True)
        return [row["text"] for row in itertools.islice(rows, max_docs or default_max)], 0
    except ImportError:
        raise DataError(f"--source {source} needs the `datasets` package: "
                        "pip install datasets") from None
    except Exception as e:
        # downloads fail in many ways (URLError, hub errors...); all mean the same here
        raise DataError(f"--source {source}: cannot download it ({_why(e)}); offline? use --input "
                        "files") from None


# -----------------------------------------------------------------------------
def format_duration(seconds):
    """3m12s, 1h05m, 45s: for ETAs and progress lines."""
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Progress of long work outside the training loop: 'label: done/total unit (share), elapsed,
    eta', on rank 0, at most one line every `every` seconds and, after a long job, once at the
    end."""

    def __init__(self, label, total, unit="", every=10.0):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.t0 = self.shown = time.perf_counter()
        self.quiet = int(os.environ.get("RANK", 0)) != 0

    def update(self, done):
        now = time.perf_counter()
        # at most one line per `every` seconds, so logs stay short; the closing line only after a
        # long job: short ones stay silent
        due = now - self.shown >= self.every or (done >= self.total and now - self.t0 >= self.every)
        if self.quiet or not due:
            return
        self.shown, elapsed = now, now - self.t0
        eta = elapsed / done * (self.total - done) if done else 0.0
        print(f"{self.label}: {done:,}/{self.total:,}{self.unit} "
              f"({done / max(1, self.total):.0%}), {format_duration(elapsed)}, "
              f"eta {format_duration(eta)}", flush=True)


# prepare: documents -> train/val split -> tokenizer -> token files

_worker_tokenizer = None  # set in each tokenizing process


_worker_corpus = None


def _init_worker(spec, corpus=None):
    global _worker_tokenizer, _worker_corpus
    # once per process: loading a vocabulary costs more than a document
    _worker_tokenizer = Tokenizer(spec)
    _worker_corpus = corpus  # documents by reference: each worker reads its own from disk


def _encode_docs(docs):
    """[eot] + ids of each document, concatenated: the separator comes first, like a BOS."""
    tok = _worker_tokenizer
    ids = [i for doc in tok.encode_batch(docs) for i in itertools.chain((tok.eot_id,), doc)]
    return np.array(ids, token_dtype(tok.vocab_size))


def _encode_range(task):
    """_encode_docs of a list of documents, or of the worker's corpus documents task = (start,
    stop), and their UTF-8 bytes."""
    docs = task if isinstance(task, list) else [_worker_corpus[i] for i in range(*task)]
    return _encode_docs(docs), sum(len(d.encode("utf-8")) for d in docs)


def encode_corpus(corpus, spec, num_proc, label):
    """(ids, UTF-8 bytes) of consecutive chunks of a Corpus, in order, encoded by num_proc
    processes. The ids are the same for any num_proc: each document is encoded on its own."""
    # small corpora: 4 chunks a process keep all busy
    step = max(1, min(64, len(corpus) // (4 * num_proc)))
    spans = [(i, min(i + step, len(corpus))) for i in range(0, len(corpus), step)]
    # chunks are handed out a window at a time, so memory holds a few of them: Pool.imap alone
    # would queue the whole corpus at once
    window = 8 * num_proc
    # files: workers read their documents themselves; texts already in memory travel with their
    # chunk
    in_memory = corpus.texts is not None
    task = (lambda span: [corpus[i] for i in range(*span)]) if in_memory else (lambda span: span)
    shared = None if in_memory else corpus
    if num_proc == 1:
        _init_worker(spec, shared)
    t0, shown, done = time.time(), 0.0, 0
    with (multiprocessing.Pool(num_proc, _init_worker, (spec, shared)) if num_proc > 1
          else contextlib.nullcontext()) as pool:
        for w in range(0, len(spans), window):
            group = spans[w:w + window]
            tasks = [task(span) for span in group]
            # imap, not imap_unordered: the chunks come back in corpus order
            for ids, n_bytes in (pool.imap(_encode_range, tasks) if pool
                                 else map(_encode_range, tasks)):
                done += n_bytes
                yield ids, n_bytes
            last = w + window >= len(spans)
            if time.time() - shown > 0.25 or last:  # a progress line, rewritten in place
                shown = time.time()
                print(f"\r{label}: {group[-1][1]:,}/{len(corpus):,} documents, "
                      f"{done / 1e6:.1f} MB, {done / 1e6 / max(shown - t0, 1e-6):.1f} MB/s",
                      end="\n" if last else "", file=sys.stderr, flush=True)


def tokenize(docs, spec, num_proc, label):
    """(tokens, UTF-8 bytes) of a list of documents, encoded by num_proc processes."""
    parts = list(encode_corpus(Corpus.of_texts(docs), spec, num_proc, label))
    return np.concatenate([ids for ids, _ in parts]), sum(n for _, n in parts)


def tokenize_to_file(corpus, spec, num_proc, label, path, vocab_size, fingerprint):
    """Encode a Corpus straight into the token file path, chunk by chunk; returns (tokens,
    bytes)."""
    with TokenWriter(path, vocab_size, fingerprint) as out:
        for ids, n_bytes in encode_corpus(corpus, spec, num_proc, label):
            out.write(ids)
            out.n_bytes += n_bytes
    return out.n_tokens, out.n_bytes


def prepare(inputs=None, out_dir="data", name=None, tokenizer=None, vocab_size=8192,
            val_fraction=0.05, num_proc=None, seed=1337, source=None, text_field="text",
            max_docs=None):
    """Write <out_dir>/<name>/{train.bin, val.bin, meta.json} (+ tokenizer.model when one is
    trained) and return the meta. With neither inputs nor source, the corpus is this Python's
    standard library."""
    # args go into meta.json, so that the data can be made again
    args, t0 = dict(locals()), time.time()
    # every problem at once, before any long work
    problems = []
    if not 0 < val_fraction < 1:
        problems.append(f"--val_fraction {val_fraction} must lie strictly between 0 and 1")
    if tokenizer is None and not 260 <= vocab_size <= 1 << 20:
        problems.append(f"--vocab_size {vocab_size} must lie in 260..{1 << 20} (256 bytes and 4 "
                        "special pieces)")
    if num_proc is not None and num_proc < 1:
        problems.append(f"--num_proc {num_proc} must be at least 1")
    if source not in (None, "shakespeare", *SOURCES) or (inputs and source):
        problems.append(f"--source {source}: choose one of shakespeare, {', '.join(SOURCES)}, and "
                        "no --input with it")
    try:  # a bad tokenizer name or file fails now, not after the corpus is read
        if tokenizer is not None:
            Tokenizer(tokenizer)
    except DataError as e:
        problems.append(str(e))
    if problems:
        raise DataError("; ".join(problems))
    num_proc = num_proc or os.cpu_count() or 1
    name = name or source or (Path(inputs[0].split("*")[0]).resolve().stem if inputs else "stdlib")
    what = (f"--source {source}" if source else f"--input {' '.join(inputs)}" if inputs
            else "stdlib *.py")
    if source:  # downloads are held in memory; files are read a chunk of documents at a time
        texts, skipped = source_documents(source, max_docs)
        n_empty, texts = sum(not d for d in texts), [d for d in texts if d]
        docs = Corpus.of_texts(texts)
    else:
        docs, n_empty, skipped = index_documents(input_files(inputs) if inputs else stdlib_files(),
                                                 text_field)
    if len(docs) < 2:
        raise DataError(f"{what}: {len(docs)} non-empty documents ({n_empty} empty, {skipped} "
                        "files not UTF-8); a train/val split needs at least 2")
    # split by document, in seeded random order: a sequential reader then meets mixed topics, not
    # one folder
    order = np.random.default_rng(seed).permutation(len(docs))
    n_val = min(len(docs) - 1, max(1, round(val_fraction * len(docs))))
    splits = {"train": docs.subset(order[n_val:]), "val": docs.subset(order[:n_val])}

    data_dir = Path(out_dir) / name
    data_dir.mkdir(parents=True, exist_ok=True)
    # written last: its presence says the rest is complete
    (data_dir / "meta.json").unlink(missing_ok=True)
    t_tok, spec = time.time(), tokenizer
    if tokenizer is None:  # a fresh BPE, learned from the train split only
        print(f"{name}: training a {vocab_size}-piece BPE on {len(splits['train'])} train "
              "documents (one process) ...", flush=True)
        spec = "tokenizer.model"
        (data_dir / spec).write_bytes(train_sentencepiece(splits["train"], vocab_size))
    elif tokenizer.endswith((".model", ".tiktoken")):
        # copied in, so that the data folder stands alone
        spec = "tokenizer" + Path(tokenizer).suffix
        # a .tiktoken's regex and specials go with it (tiktoken_extras)
        extras = Path(tokenizer + ".json")
        # read first: they may be these very files
        extras = extras.read_bytes() if extras.is_file() else None
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
        n_tokens, n_bytes = tokenize_to_file(split_docs, tok.name, num_proc, f"{name}/{split}",
                                             data_dir / f"{split}.bin", tok.vocab_size,
                                             tok.fingerprint)
        meta[split] = dict(documents=len(split_docs), tokens=n_tokens, bytes=n_bytes,
                           tokens_per_byte=round(n_tokens / n_bytes, 6))
    t_enc, meta["args"] = time.time() - t_enc, args
    # temp file + rename: an interrupted write never leaves a half meta.json that looks complete
    (data_dir / ".meta.json.tmp").write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(data_dir / ".meta.json.tmp", data_dir / "meta.json")

    mb = (meta["train"]["bytes"] + meta["val"]["bytes"]) / 1e6
    print(f"{what}: {len(docs)} documents, {mb:.1f} MB ({n_empty} empty, {skipped} non-UTF-8 files "
          f"skipped); tokenizer {spec}, {tok.vocab_size} ids, "
          f"{'trained' if tokenizer is None else 'loaded'} in {t_tok:.1f} s")
    for split, m in (("train", meta["train"]), ("val", meta["val"])):
        print(f"  {data_dir / split}.bin: {m['documents']} documents, {m['tokens']:,} tokens, "
              f"{m['tokens_per_byte']:.3f} tokens/byte")
    print(f"wrote {data_dir}/ in {time.time() - t0:.1f} s (tokenized at {mb / t_enc:.1f} MB/s, "
          f"num_proc={num_proc})")
    return meta


def from_raw(train_file, val_file, vocab_size, out_dir="data", name=None, tokenizer=None,
             raw_dtype="uint16"):
    """Token files of another tool (nanoGPT's train.bin / val.bin: bare little-endian ids, no
    header) as a data folder of this repository. With --tokenizer (the one that made the ids),
    meta.json names it and the headers hold the exact UTF-8 byte counts, so bits per byte works;
    without one the bytes are unknown (0)."""
    dtype = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}.get(raw_dtype)
    problems = [] if dtype else [f"--raw_dtype {raw_dtype}: choose uint16 (nanoGPT) or uint32"]
    problems += [f"--vocab_size {vocab_size} must be positive"] if vocab_size < 1 else []
    tok = None
    try:
        tok = Tokenizer(tokenizer) if tokenizer else None
    except DataError as e:
        problems.append(str(e))
    if tok and tok.vocab_size != vocab_size:
        problems.append(f"--vocab_size {vocab_size} differs from --tokenizer {tokenizer}'s "
                        f"{tok.vocab_size} ids")
    for path in (train_file, val_file):
        if not Path(path).is_file():
            problems.append(f"--from_raw {path}: no such file")
        elif dtype and Path(path).stat().st_size % dtype.itemsize:
            problems.append(f"--from_raw {path}: {Path(path).stat().st_size} bytes is no whole "
                            f"number of {raw_dtype} ids")
    if problems:
        raise DataError("; ".join(problems))
    data_dir = Path(out_dir) / (name or Path(train_file).resolve().parent.name)
    data_dir.mkdir(parents=True, exist_ok=True)
    # written last: its presence says the rest is complete
    (data_dir / "meta.json").unlink(missing_ok=True)
    spec = None
    # copied in, so that the folder stands alone
    if tok and tokenizer.endswith((".model", ".tiktoken")):
        spec = "tokenizer" + Path(tokenizer).suffix
        (data_dir / spec).write_bytes(Path(tokenizer).read_bytes())
    elif tok:
        spec = tokenizer
    meta = dict(name=data_dir.name, tokenizer=spec, vocab_size=vocab_size,
                eot_id=tok.eot_id if tok else None,
                fingerprint=tok.fingerprint if tok else 0, dtype=token_dtype(vocab_size).name,
                args=dict(from_raw=[str(train_file), str(val_file)], raw_dtype=raw_dtype,
                          tokenizer=tokenizer))
    for split, path in (("train", train_file), ("val", val_file)):
        # memory-mapped and checked in chunks, so a file larger than memory converts
        ids = np.memmap(path, dtype, mode="r") if Path(path).stat().st_size else np.zeros(0, dtype)
        n_bytes = 0
        # chunks: range check and byte count in bounded memory
        for start in range(0, len(ids), 1 << 24):
            chunk = np.asarray(ids[start:start + (1 << 24)], np.int64)
            if chunk.max() >= vocab_size:
                raise DataError(f"--from_raw {path}: id {chunk.max()} does not fit --vocab_size "
                                f"{vocab_size}")
            n_bytes += int(tok.token_bytes[chunk].sum()) if tok else 0
        out = ids if dtype == token_dtype(vocab_size) else ids.astype(token_dtype(vocab_size))
        write_tokens(data_dir / f"{split}.bin", out, vocab_size, n_bytes, meta["fingerprint"])
        meta[split] = dict(tokens=len(ids), bytes=n_bytes,
                           tokens_per_byte=round(len(ids) / n_bytes, 6) if n_bytes else None)
        print(f"  {data_dir / split}.bin: {len(ids):,} tokens"
              + (f", {n_bytes:,} bytes of text" if tok else ""))
    (data_dir / ".meta.json.tmp").write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(data_dir / ".meta.json.tmp", data_dir / "meta.json")
    print(f"wrote {data_dir}/ from raw ids"
          + ("" if tok else " (no --tokenizer: bits per byte unknown)"))
    return meta


def load_meta(data_dir):
    try:  # missing, or empty / cut short by an interrupted copy: one clear line either way
        return json.loads((Path(data_dir) / "meta.json").read_text())
    except (OSError, ValueError):
        raise DataError(f"{Path(data_dir) / 'meta.json'}: not found or not JSON; prepare the data "
                        "with `python data.py`") from None


def load_tokenizer(data_dir, spec=None):
    """The tokenizer named in <data_dir>/meta.json (or by spec); its file names are relative to
    data_dir."""
    spec = spec or load_meta(data_dir)["tokenizer"]
    if not spec:  # e.g. converted --from_raw without --tokenizer
        raise DataError(f"{Path(data_dir) / 'meta.json'} names no tokenizer")
    return Tokenizer(Path(data_dir) / spec if spec.endswith((".model", ".tiktoken")) else spec)


# -----------------------------------------------------------------------------
# Hugging Face tokenizer files: what `transformers.AutoTokenizer.from_pretrained(folder)` loads,
# offline, with the ids of Tokenizer.encode. No transformers import: plain JSON, text and the
# .model.
#
# BOS convention: a document here is [end-of-text] + its ids (data.py puts the separator first).
# The files name end-of-text as bos_token (and eos_token) with add_bos_token false: the tokenizer
# adds nothing, so its ids equal Tokenizer.encode, and lm-eval's rolling perplexity prepends the
# BOS once itself (its prefix token), scoring exactly [end-of-text] + document, as training here
# does. add_bos_token true would score BOS, BOS, document.

def bytes_to_unicode():
    """GPT-2's byte -> character map of vocab.json and merges.txt: printable Latin-1 bytes stand
    for themselves, the other 68 for chr(256 + k) in byte order, so that every piece is a plain
    JSON string and a merge line splits at its one space."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)}
    shifted = iter(range(256, 512))
    return {b: chr(b) if b in printable else chr(next(shifted)) for b in range(256)}


def bpe_merges(ranks):
    """The merge list of a byte-level BPE known only by its ranks (tiktoken's piece -> rank): a
    piece of 2+ bytes is the merge of the two parts that BPE with the lower ranks alone leaves of
    its bytes (tiktoken merges the lowest-ranked adjacent pair, leftmost on ties). In rank order
    this is GPT-2's merges.txt."""
    merges = []
    for piece, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        parts = [piece[i:i + 1] for i in range(len(piece))]
        while len(parts) > 2:
            pair_ranks = [ranks.get(a + b, rank) for a, b in zip(parts, parts[1:])]
            i = min(range(len(pair_ranks)), key=pair_ranks.__getitem__)
            if pair_ranks[i] >= rank:  # only higher merges would join these parts
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges.append(parts)
        elif len(parts) > 2:  # a pruned vocabulary that lost a piece on the way (prune_tokenizer
            # keeps them): no merges.txt gives this piece, transformers would tokenize otherwise
            raise DataError(f"rank {rank} ({piece!r}) cannot be built by merging lower ranks, so "
                            "no merges.txt reproduces this tokenizer")
    return merges


def save_hf_tokenizer(tok, out_dir):
    """Write tok (a Tokenizer or a data folder) into out_dir as files AutoTokenizer loads with
    tok's ids; returns their names. tiktoken: vocab.json + merges.txt (GPT2Tokenizer);
    sentencepiece: the .model itself (LlamaTokenizer). bos/eos are the end-of-text token, never
    added by the tokenizer (convention above). A tokenizer that cannot be exported is refused
    before anything is written."""
    tok = tok if isinstance(tok, Tokenizer) else load_tokenizer(tok)
    # for both: literal '<|endoftext|>' / '<s>' in a text stay text, as in Tokenizer.encode, and
    # decode gives the text back (no clean-up of spaces before punctuation)
    config = dict(add_bos_token=False, add_eos_token=False, split_special_tokens=True,
                  clean_up_tokenization_spaces=False)
    if tok._tt is not None:
        enc = tok._tt
        if enc._pat_str != r50k_pat_str:  # GPT2Tokenizer always pre-splits with GPT-2's regex
            raise DataError(f"tokenizer {tok.name}: only tiktoken encodings with GPT-2's pre-split "
                            "regex export to Hugging Face files here (vocab.json + merges.txt)")
        to_chars = bytes_to_unicode()
        text_of = lambda piece: "".join(to_chars[b] for b in piece)  # noqa: E731
        vocab = {text_of(p): i for p, i in enc._mergeable_ranks.items()} | enc._special_tokens
        merges = [f"{text_of(a)} {text_of(b)}" for a, b in bpe_merges(enc._mergeable_ranks)]
        files = {"vocab.json": json.dumps(vocab, ensure_ascii=False),
                 "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n"}
        # add_prefix_space false: the first word of a text gets no space put in front
        config.update(tokenizer_class="GPT2Tokenizer", bos_token=EOT, eos_token=EOT, unk_token=EOT,
                      add_prefix_space=False, errors="replace")
    else:
        sp, eot = tok._sp, tok._sp.id_to_piece(tok.eot_id)
        files = {"tokenizer.model": tok._model_bytes}
        # legacy false + add_prefix_space false: no dummy '▁' in front (data.py trains without
        # one). A literal '▁' in a text still differs: transformers reads it as a space,
        # Tokenizer.encode as its 3 bytes
        config.update(tokenizer_class="LlamaTokenizer", legacy=False, add_prefix_space=False,
                      bos_token=eot, eos_token=eot, unk_token=sp.id_to_piece(sp.unk_id()))
    files["tokenizer_config.json"] = json.dumps(config, indent=2) + "\n"
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        content = content if isinstance(content, bytes) else content.encode("utf-8")
        (Path(out_dir) / name).write_bytes(content)
    return list(files)


# -----------------------------------------------------------------------------
# batches: windows of seq_len + 1 tokens; inputs are [:, :-1], targets [:, 1:]

def _windows(tokens, starts, seq_len):
    return torch.from_numpy(np.stack([np.asarray(tokens[s:s + seq_len + 1], dtype=np.int64)
                                      for s in starts]))


def _too_short(tokens, need, what):
    name = getattr(tokens, "filename", None) or "token array"
    return DataError(f"{name}: {len(tokens):,} tokens, fewer than {what} needs ({need:,})")


def random_batch(tokens, batch_size, seq_len, generator):
    """[batch_size, seq_len + 1] windows at uniformly random offsets (nanoGPT style); generator
    makes it repeatable."""
    if len(tokens) < seq_len + 1:
        raise _too_short(tokens, seq_len + 1, "one window of seq_len + 1")
    starts = torch.randint(len(tokens) - seq_len, (batch_size,), generator=generator).tolist()
    return _windows(tokens, starts, seq_len)


class BatchStream:
    """Sequential, rank-sharded, resumable reader. The global batch of one optimizer step is `rows`
    consecutive windows of seq_len + 1 tokens, window j starting at position + j * seq_len (windows
    overlap by one token, the target of the last input). Row j is read by rank r at micro-step m
    when j // micro_rows == m * world + r. So the same global batch is read whatever the world
    size / accumulation split."""

    def __init__(self, tokens, micro_rows, seq_len, rank=0, world=1, accum=1, position=0):
        assert 0 <= rank < world and micro_rows >= 1 and seq_len >= 1 and accum >= 1
        self.tokens, self.micro_rows, self.seq_len = tokens, micro_rows, seq_len
        self.rank, self.world, self.accum = rank, world, accum
        self.rows = micro_rows * accum * world
        self.step_tokens = self.rows * seq_len  # how far one optimizer step moves
        if len(tokens) < self.step_tokens + 1:
            raise _too_short(tokens, self.step_tokens + 1,
                             f"one global batch of {self.rows} rows x {seq_len} + 1")
        self.position, self.epoch, self.micro = position, 0, 0
        self._wrap()

    def _wrap(self):
        # a batch that would run past the end is skipped whole, so that every world size sees the
        # same epochs
        if self.position + self.step_tokens + 1 > len(self.tokens):
            self.position, self.epoch = 0, self.epoch + 1

    def next_micro(self):
        """[micro_rows, seq_len + 1]: this rank's rows of the current global batch at micro-step
        self.micro."""
        row_tokens = self.micro_rows * self.seq_len
        start = self.position + (self.micro * self.world + self.rank) * row_tokens
        # np.asarray copies just these rows out of the memmap; nothing else of the file is read
        block = np.asarray(self.tokens[start:start + row_tokens + 1], dtype=np.int64)
        # overlapping windows of seq_len + 1 with stride seq_len: the last target is the next
        # row's first input
        rows = torch.from_numpy(block).unfold(0, self.seq_len + 1, self.seq_len).contiguous()
        self.micro += 1
        if self.micro == self.accum:  # every rank moves on by the whole global batch
            self.micro, self.position = 0, self.position + self.step_tokens
            self._wrap()
        return rows

    def state_dict(self):
        # inside a step the micro counter would be lost: a resume would then repeat or skip rows
        assert self.micro == 0, "save the data position between optimizer steps, not inside one"
        return dict(position=self.position, epoch=self.epoch)

    def load_state_dict(self, state):
        self.position, self.epoch, self.micro = int(state["position"]), int(state["epoch"]), 0
        # a checkpoint of a run with a smaller batch may point past the last batch that fits now
        self._wrap()


def eval_windows(tokens, micro_rows, seq_len, max_tokens, rank=0, world=1):
    """Batches of up to micro_rows sequential windows over the first min(max_tokens, len) tokens (a
    tail shorter than seq_len is left out). Rank r takes windows r, r + world, ...: the union is the
    same for any world size."""
    # ranks may get different numbers of batches: callers reduce their sums once, after the loop,
    # never per batch (a collective per batch would hang the rank with fewer)
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
                        help="files, folders (recursive) or globs: .txt (split at <|endoftext|>), "
                             ".jsonl, other text; default: the .py files of Python's standard "
                             "library")
    parser.add_argument("--source", choices=["shakespeare", *SOURCES],
                        help="download a known data set instead (default: none)")
    parser.add_argument("--text_field", default="text",
                        help="the JSON field that holds the text in .jsonl files")
    parser.add_argument("--max_docs", type=int,
                        help="take at most this many documents from --source (default: all, or "
                             "the source's own cap)")
    parser.add_argument("--tokenizer",
                        help="gpt2 (or another tiktoken name), a .tiktoken or a sentencepiece "
                             ".model file; default: train a sentencepiece BPE on the train split")
    parser.add_argument("--vocab_size", type=int, default=8192,
                        help="pieces of the trained tokenizer")
    parser.add_argument("--val_fraction", type=float, default=0.05,
                        help="share of documents held out for validation")
    parser.add_argument("--num_proc", type=int,
                        help="tokenizing processes (default: every CPU core)")
    parser.add_argument("--out_data_dir",
                        help="the data folder to write; its last part names the data set "
                             "(default: data/<the source, the first input's name, or stdlib>)")
    parser.add_argument("--out_dir",
                        help="old form of --out_data_dir: the data set goes into OUT_DIR/NAME/ "
                             "(default: data)")
    parser.add_argument("--name",
                        help="old form of --out_data_dir: the data set's name (default: the "
                             "source, the first input's name, or stdlib)")
    parser.add_argument("--seed", type=int, default=1337,
                        help="seed of the train/val split by document")
    parser.add_argument("--from_raw", nargs=2, metavar=("TRAIN", "VAL"),
                        help="instead: convert two raw headerless id files (nanoGPT's train.bin "
                             "val.bin) into the data folder; needs --vocab_size, --tokenizer "
                             "optional")
    parser.add_argument("--raw_dtype", default="uint16",
                        help="--from_raw: the ids' type, uint16 (nanoGPT) or uint32")
    args = vars(parser.parse_args())
    # what remains in args are prepare()'s keyword arguments
    raw, raw_dtype = args.pop("from_raw"), args.pop("raw_dtype")
    out_data_dir = args.pop("out_data_dir")
    # flags that would be ignored, and two spellings of one folder: one line each, as for every
    # other mistake
    ignored = [f for f, unused in (("--max_docs", not args["source"]),
                                   ("--text_field", not args["inputs"]),
                                   ("--raw_dtype", not raw)) if unused and given(f)]
    if ignored:
        why = {"--max_docs": "without --source", "--text_field": "without --input",
               "--raw_dtype": "without --from_raw"}
        problem = "; ".join(f"{f} does not apply {why[f]}" for f in ignored)
    elif out_data_dir and (args["out_dir"] or args["name"]):
        problem = "give --out_data_dir, or the old --out_dir and --name, not both"
    else:
        problem = None
    if out_data_dir:
        args["out_dir"] = os.path.dirname(out_data_dir.rstrip("/")) or "."
        args["name"] = os.path.basename(out_data_dir.rstrip("/"))
    args["out_dir"] = args["out_dir"] or "data"
    try:
        if problem:
            raise DataError(problem)
        if raw:
            return from_raw(*raw, args["vocab_size"], args["out_dir"], args["name"],
                            args["tokenizer"], raw_dtype)
        prepare(**args)
    except (DataError, OSError) as e:  # OSError: e.g. --out_dir is a file, or the disk is full
        print(f"data.py: error: {e}", file=sys.stderr)
        sys.exit(2)  # as argparse and the other scripts do for bad input


if __name__ == "__main__":
    main()
