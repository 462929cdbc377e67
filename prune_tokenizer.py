"""
Compact tokenizer (Tang et al. 2024, "Rethinking Optimization and Architecture for Tiny Language
Models", arXiv 2402.02791, "Compact Tokenizer"; PanGu-pi Pro): keep only the V most frequent tokens
of a big tokenizer, so a small model spends fewer parameters on its embedding and head (PanGu-pi-1B
Pro: 100,883 -> 48,000 ids).

  python data.py && python prune_tokenizer.py  # data/stdlib's 8192-piece BPE -> 4096
  python prune_tokenizer.py --data_dir data/stdlib-gpt2 --vocab_size 16384 --init_from out/ckpt.pt
  python prune_tokenizer.py --compare  # GPT-2 -> 8k and 16k; tiny models trained on equal bytes

One run: statistics (token_counts.tsv, top tokens decoded) -> selection -> a tokenizer file that
stock tiktoken / sentencepiece load -> train.bin and val.bin re-tokenized document by document ->
with --init_from, a copy of that model with its embedding and head rows sliced to the kept ids
(ready for `--init_from`, or for inheritune.py: the PanGu-pi Pro recipe). The output folder is a
data folder: `train.py --data_dir <it>`.

Unlike the official script, the selection is closed under BPE merges: every kept token can still be
produced, because every piece its merges pass through is kept too (otherwise its row is dead and the
text needs more tokens).
"""
import argparse
import base64
import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from sentencepiece import sentencepiece_model_pb2

import data
from model import GPT
from train import (SHAPE_FLAGS, HelpFormatter, UsageError, add_train_args, alias, build_model,
                   check_args, cli, given_flags, load_checkpoint, model_config,
                   model_from_checkpoint, plot_curves, print0, refuse, save_checkpoint, set_help,
                   setup, train, val_curve, with_args)

SP_NORMAL, SP_BPE = 1, 2  # sentencepiece ModelProto enums: piece type NORMAL, model type BPE


# --- the method: copy these (stdlib and torch only) -----------------------------------------------
def merge_path(piece, rank):
    """Byte-pair encoding of one piece (bytes: byte-level BPE; str: sentencepiece BPE) under rank
    (piece -> id, lower merges first): start from its single bytes/characters and merge the adjacent
    pair whose concatenation has the lowest rank, leftmost on ties. Returns (final parts, pieces
    merged)."""
    # the merge order of tiktoken and sentencepiece; tiktoken first looks a whole pre-token up in
    # the vocabulary, and merges are what the rest of it needs
    parts, merged = [piece[i:i + 1] for i in range(len(piece))], []
    while len(parts) > 1:
        ranks = [rank.get(a + b, math.inf) for a, b in zip(parts, parts[1:])]
        i = min(range(len(ranks)), key=ranks.__getitem__)  # min keeps the first: leftmost on ties
        if ranks[i] == math.inf:
            break  # no adjacent pair is in the vocabulary
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
        merged.append(parts[i])
    return parts, merged


def is_reachable(piece, rank):
    """A kept piece is reachable iff BPE of its own bytes/characters under the kept ranks yields
    exactly it."""
    return piece in rank and merge_path(piece, rank)[0] == [piece]


def prune_vocab(counts, vocab_size, mandatory, rank):
    """Old ids to keep, ascending (= new-id order, so old -> new is monotone): the mandatory ids
    (specials, byte base), then tokens by decreasing count, each with its closure: every piece its
    merges pass through under the full vocabulary, and the single bytes/characters they start from.
    A token whose closure no longer fits is skipped."""
    # Tang et al. keep "the most frequent tokens"; the closure is what the official script leaves
    # out. With it, BPE under the kept ranks takes the same merges as under the full vocabulary,
    # so every kept token stays reachable (a token that is not has a dead row, and its text needs
    # more tokens)
    keep, piece_of = set(mandatory), {i: p for p, i in rank.items()}
    if len(keep) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(keep)} mandatory "
                         "tokens")
    # most frequent first; sorted is stable, so ties keep the lower id (the earlier merge) first
    by_count = sorted(range(len(counts)), key=lambda i: counts[i], reverse=True)
    for i in by_count:
        if len(keep) >= vocab_size:
            break
        if i in keep or i not in piece_of:
            continue
        parts, merged = merge_path(piece_of[i], rank)
        if parts != [piece_of[i]]:
            continue  # not producible even with the full vocabulary; BPE never emits it
        # its single bytes/characters too: sentencepiece merges a character outside the vocabulary,
        # Hugging Face's BPE (train.py --export_hf) turns it into bytes before any merge
        units = {piece_of[i][k:k + 1] for k in range(len(piece_of[i]))}
        need = ({rank[p] for p in merged} | {rank[u] for u in units if u in rank} | {i}) - keep
        if len(keep) + len(need) <= vocab_size:
            keep |= need
    return sorted(keep)


def remap_embeddings(model_args, state_dict, kept_ids):
    """E_new = E_old[kept_ids], rows in new-id order, and the same for an untied head; everything
    else is unchanged. Returns (model_args, state_dict) of the small-vocabulary model."""
    idx = torch.as_tensor(kept_ids, dtype=torch.long)
    sd = dict(state_dict)
    sd["wte.weight"] = state_dict["wte.weight"][idx].clone()
    if "lm_head.weight" in sd:
        if model_args.get("tie_embeddings", True):
            sd["lm_head.weight"] = sd["wte.weight"]  # a tied head stays tied: GPT re-ties on load
        else:
            sd["lm_head.weight"] = state_dict["lm_head.weight"][idx].clone()
    return {**model_args, "vocab_size": len(kept_ids)}, sd


# --- statistics -----------------------------------------------------------------------------------
def token_counts(paths, vocab_size, chunk_tokens=1 << 22):
    """counts[i] = occurrences of id i in all token files."""
    # chunk by chunk over the memmaps, so a corpus larger than memory can be counted; the sum of the
    # chunks' bincounts equals np.bincount of the whole
    counts = np.zeros(vocab_size, np.int64)
    n_tokens = sum(data.file_info(p)["n_tokens"] for p in paths)
    progress = data.Progress("counting tokens", n_tokens, " tokens")
    done = 0
    for path in paths:
        tokens = data.read_tokens(path, vocab_size=vocab_size)
        for start in range(0, len(tokens), chunk_tokens):
            counts += np.bincount(tokens[start:start + chunk_tokens], minlength=vocab_size)
            done += len(tokens[start:start + chunk_tokens])
            progress.update(done)
    return counts


# --- tokenizer files that stock libraries load ----------------------------------------------------
def tiktoken_file(pieces):
    """The .tiktoken format (tiktoken.load.load_tiktoken_bpe): one 'base64(bytes) rank' line per
    token, ranks 0..n-1 in the original order."""
    # special tokens have no rank: tiktoken_extras numbers them after the last one
    return "".join(f"{base64.b64encode(p).decode()} {r}\n" for r, p in enumerate(pieces)).encode()


def tiktoken_extras(pat_str, special_names, n_ranks):
    """FILE.tiktoken.json beside the rank file: the source's pre-split regex and its special tokens,
    numbered after the n_ranks ranks in their old order."""
    # so a pruned cl100k / o200k splits text as its source does; without this file data.Tokenizer
    # would assume GPT-2's regex and <|endoftext|> alone
    specials = {name: n_ranks + k for k, name in enumerate(special_names)}
    return json.dumps({"pat_str": pat_str, "special_tokens": specials}, indent=1).encode()


def sentencepiece_file(model_bytes, kept_ids):
    """The ModelProto with only the kept pieces, in their old order with their types and scores;
    the special ids of the trainer spec follow their pieces."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_bytes)
    # scores are BPE's merge priorities: kept as they are, the kept pieces merge in the same order
    kept = [copy.deepcopy(proto.pieces[i]) for i in kept_ids]
    del proto.pieces[:]
    proto.pieces.extend(kept)
    new_id = {old: new for new, old in enumerate(kept_ids)}
    spec = proto.trainer_spec
    spec.vocab_size = len(kept_ids)
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = (
        new_id.get(i, -1) for i in (spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id))
    return proto.SerializeToString()


# --- remapping the data ---------------------------------------------------------------------------
def remap_tokens(tokens, old, new, num_proc=1, label="remap"):
    """Re-tokenize a token file's ids document by document: each [old eot] + doc becomes [new eot] +
    new.encode(old.decode(doc)). Returns (ids, bytes of text)."""
    # the same as encoding the original text with the new tokenizer, in data.prepare's layout
    tokens = np.asarray(tokens)
    starts = np.flatnonzero(tokens == old.eot_id)
    if len(tokens) and (not len(starts) or starts[0] != 0):
        raise data.DataError(f"{label}: the ids do not start with the document separator "
                             f"{old.eot_id}; not a data.py token file")
    ends = np.append(starts[1:], len(tokens))
    progress, docs = data.Progress(f"{label}: decoding", len(starts), " documents"), []
    for k, (a, b) in enumerate(zip(starts, ends)):
        docs.append(old.decode(tokens[a + 1:b]))
        progress.update(k + 1)
    return data.tokenize(docs, new.name, num_proc, label)  # which shows its own progress


# --- the pipeline ---------------------------------------------------------------------------------
def source_vocab(tok):
    """What pruning needs of a data.Tokenizer, as a dict: rank (mergeable piece -> id), mandatory
    ids, names (id -> piece, for people), write(kept ids) -> {file suffix: bytes}, and suffix."""
    if tok.name.endswith(".model"):
        return sentencepiece_vocab(tok)
    return tiktoken_vocab(tok)


def sentencepiece_vocab(tok):
    """source_vocab of a sentencepiece BPE: every piece that is not NORMAL is mandatory (unknown,
    control, user-defined, the byte pieces <0x00>..<0xFF>)."""
    model_bytes = Path(tok.name).read_bytes()
    proto = sentencepiece_model_pb2.ModelProto.FromString(model_bytes)
    if proto.trainer_spec.model_type != SP_BPE:
        raise data.DataError(f"{tok.name}: a sentencepiece model of type "
                             f"{proto.trainer_spec.model_type}, not BPE (2); only BPE is pruned "
                             "here")
    rank = {p.piece: i for i, p in enumerate(proto.pieces) if p.type == SP_NORMAL}
    # BPE merges by score, and the trainer writes pieces in that order: then ids are merge ranks
    scores = [proto.pieces[i].score for i in rank.values()]
    if any(a <= b for a, b in zip(scores, scores[1:])):
        raise data.DataError(f"{tok.name}: its NORMAL pieces are not in decreasing score order, "
                             "so ids are not the merge order")
    return dict(rank=rank, mandatory=[i for i, p in enumerate(proto.pieces) if p.type != SP_NORMAL],
                names=dict(enumerate(p.piece for p in proto.pieces)), suffix=".model",
                write=lambda kept: {".model": sentencepiece_file(model_bytes, kept)})


def tiktoken_vocab(tok):
    """source_vocab of a tiktoken encoding: the 256 single bytes and the special tokens are
    mandatory."""
    enc = tok._tt
    rank, specials = enc._mergeable_ranks, enc._special_tokens  # piece -> id; name -> id
    names = {i: p for p, i in rank.items()} | {i: name.encode() for name, i in specials.items()}
    # with every single byte kept, any text still has an encoding, byte by byte at worst
    mandatory = sorted(i for p, i in rank.items() if len(p) == 1) + sorted(specials.values())
    return dict(rank=rank, mandatory=mandatory, names=names, suffix=".tiktoken",
                write=lambda kept: tiktoken_files(kept, names, rank, specials, enc._pat_str))


def tiktoken_files(kept, names, rank, specials, pat_str):
    """{suffix: bytes} of a pruned tiktoken: the rank file and its regex + specials beside it."""
    pieces = [names[i] for i in kept if i in names and names[i] in rank]
    # every special is mandatory, so all are kept, in their old order
    special_names = [name for name, i in sorted(specials.items(), key=lambda kv: kv[1])]
    return {".tiktoken": tiktoken_file(pieces),
            ".tiktoken.json": tiktoken_extras(pat_str, special_names, len(pieces))}


def kept_in_new_order(kept, tok):
    """Old ids in new-id order."""
    # a pruned .tiktoken puts its special tokens after the last rank, in their old order
    # (<|endoftext|> first for GPT-2 and cl100k); sentencepiece keeps every piece's relative
    # position
    if tok.name.endswith(".model"):
        return kept
    specials = set(tok._tt._special_tokens.values())
    return [i for i in kept if i not in specials] + sorted(specials)


def check_inputs(args, vocab_size, tok, stats_files, mandatory):
    """Every problem at once, before any long work: vocabulary size, foreign token files, checkpoint
    vocabulary."""
    problems = []
    if not len(mandatory) <= vocab_size < tok.vocab_size:
        problems.append(f"--vocab_size {vocab_size}: must lie in {len(mandatory)}.."
                        f"{tok.vocab_size - 1}, since {tok.name} has {tok.vocab_size} ids of which "
                        f"{len(mandatory)} are mandatory (specials and the byte base)")
    for path in stats_files:
        info = data.file_info(path)
        if info["fingerprint"] != tok.fingerprint or info["vocab_size"] != tok.vocab_size:
            problems.append(f"--stats_files {path}: tokenized with another tokenizer "
                            f"({info['vocab_size']} ids, fingerprint {info['fingerprint']}) than "
                            f"{tok.name} ({tok.vocab_size} ids, fingerprint {tok.fingerprint}), "
                            "the one being pruned")
    if args.init_from:
        # a checkpoint that is no GPT of ours fails here, not at the end
        vocab = model_from_checkpoint(args.init_from, "--init_from").config.vocab_size
        if vocab != tok.vocab_size:
            problems.append(f"--init_from {args.init_from}: its vocabulary is {vocab}, but "
                            f"{tok.name} has {tok.vocab_size} ids; give a checkpoint trained on "
                            "data tokenized by it")
    if problems:
        raise UsageError("; ".join(problems))


def write_token_counts(path, counts, by_count, names, new_id):
    """token_counts.tsv: every source token, most frequent first, decoded, with its new id or -."""
    with open(path, "w") as f:
        f.write("old_id\tcount\tshare\tnew_id\tpiece\n")
        for i in by_count:
            # an id with no name: e.g. cl100k's specials besides <|endoftext|>, not kept
            piece = names.get(i, b"<other special>")
            if isinstance(piece, bytes):
                piece = piece.decode("utf-8", "backslashreplace")
            f.write(f"{i}\t{counts[i]}\t{counts[i] / counts.sum():.3e}\t{new_id.get(i, '-')}\t"
                    f"{json.dumps(piece, ensure_ascii=False)}\n")


def remap_split(src, tok, new, num_proc, label):
    """One split's ids re-tokenized by new: (ids, bytes of text); fails if the text changed."""
    tokens = data.read_tokens(src, tok.vocab_size, tok.fingerprint)  # refuses another tokenizer's
    ids, n_bytes = remap_tokens(tokens, tok, new, num_proc, label)
    # decode(encode(text)) != text somewhere: the remap would change the data
    if n_bytes != data.file_info(src)["n_bytes"]:
        raise data.DataError(f"{src}: decoding gives {n_bytes} bytes of text, its header says "
                             f"{data.file_info(src)['n_bytes']}")
    return ids, n_bytes


def prune(args, data_dir, vocab_size, out_dir):
    """Statistics -> selection -> tokenizer file -> re-tokenized train/val (+ checkpoint).
    Returns the report."""
    t0, tok, meta = time.time(), data.load_tokenizer(data_dir), data.load_meta(data_dir)
    stats_files = args.stats_files or [os.path.join(data_dir, "train.bin")]
    vocab = source_vocab(tok)
    rank, mandatory, names = vocab["rank"], set(vocab["mandatory"]), vocab["names"]
    # every check before the first file is written
    check_inputs(args, vocab_size, tok, stats_files, mandatory)
    # writing there would delete the source's meta.json and overwrite its files
    if Path(out_dir).resolve() == Path(data_dir).resolve():
        raise UsageError(f"--out_data_dir {out_dir} is the source --data_dir: choose another "
                         "folder")
    counts = token_counts(stats_files, tok.vocab_size)
    # prune_vocab's ascending old ids, reordered as the written tokenizer will number them
    kept = kept_in_new_order(prune_vocab(counts, vocab_size, mandatory, rank), tok)

    # the tokenizer file (and a .tiktoken's regex + specials beside it)
    out, spec = Path(out_dir), "tokenizer" + vocab["suffix"]
    out.mkdir(parents=True, exist_ok=True)
    # meta.json is written last: its presence says the folder is complete
    (out / "meta.json").unlink(missing_ok=True)
    for suffix, blob in vocab["write"](kept).items():
        (out / ("tokenizer" + suffix)).write_bytes(blob)
    new = data.Tokenizer(out / spec)
    new_id = {old: n for n, old in enumerate(kept)}
    # the kept mergeable pieces under their new ids: the ranks the written tokenizer merges by
    new_rank = {names[i]: new_id[i] for i in kept if names[i] in rank}
    # the closure guarantees it; cheap to check
    assert all(is_reachable(p, new_rank) for p in new_rank)

    # the official script's selection (mandatory + top by count, no closure), to show what the
    # closure prevents
    by_count = np.argsort(-counts, kind="stable").tolist()
    top = [i for i in by_count if i not in mandatory][:vocab_size - len(mandatory)]
    naive = mandatory | set(top)
    naive_rank = {p: i for p, i in rank.items() if i in naive}
    write_token_counts(out / "token_counts.tsv", counts, by_count, names, new_id)
    report = dict(source=tok.name, source_vocab=tok.vocab_size, vocab_size=len(kept),
                  mandatory=len(mandatory), off_top=len(set(kept) - naive),
                  naive_unreachable=sum(not is_reachable(p, naive_rank) for p in naive_rank),
                  counted=int(counts.sum()), coverage=float(counts[kept].sum() / counts.sum()),
                  stats_files=list(map(str, stats_files)))

    new_meta = dict(name=out.name, tokenizer=spec, vocab_size=new.vocab_size, eot_id=new.eot_id,
                    fingerprint=new.fingerprint, dtype=data.token_dtype(new.vocab_size).name,
                    pruned=report)
    for split in ("train", "val"):
        ids, n_bytes = remap_split(os.path.join(data_dir, f"{split}.bin"), tok, new, args.num_proc,
                                   f"{out.name}/{split}")
        data.write_tokens(out / f"{split}.bin", ids, new.vocab_size, n_bytes, new.fingerprint)
        new_meta[split] = dict(documents=int(np.sum(ids == new.eot_id)), tokens=len(ids),
                               bytes=n_bytes, tokens_per_byte=round(len(ids) / n_bytes, 6))
        report[split] = dict(tokens_before=meta[split]["tokens"], tokens_after=len(ids),
                             bytes=n_bytes)
    tmp = out / ".meta.json.tmp"  # write, then rename: a killed run leaves no meta.json
    tmp.write_text(json.dumps(new_meta, indent=2) + "\n")
    os.replace(tmp, out / "meta.json")

    if args.init_from:
        ckpt = load_checkpoint(args.init_from, "--init_from", weights=True)
        model_args, state_dict = remap_embeddings(ckpt["model_args"], ckpt["model"], kept)
        report["checkpoint"] = args.out_checkpoint or os.path.join(
            os.path.dirname(args.init_from), f"ckpt_pruned{len(kept)}.pt")
        # the checkpoint records the pruned tokenizer, so it refuses data of the old one
        save_checkpoint(report["checkpoint"], {
            "model_args": model_args, "model": state_dict, "pruned_from": args.init_from,
            "tokenizer": str(out / spec), "fingerprint": new.fingerprint})
    report.update(out_dir=str(out), seconds=round(time.time() - t0, 1))
    return report


def embedding_params(args, vocab_size):
    """(token embedding + head parameters, all parameters) of the --preset model (shape flags
    applied) with this vocabulary; a tied head counts once."""
    with torch.device("meta"):  # shapes only: no memory or init time, even for big presets
        model = GPT(model_config(args, vocab_size))
    n_head = 0 if model.config.tie_embeddings else model.lm_head.weight.numel()
    return model.wte.weight.numel() + n_head, model.num_params()


def print_report(r, args):
    print0(f"pruned {r['source']} ({r['source_vocab']:,} ids) to {r['vocab_size']:,} ids -> "
           f"{r['out_dir']}/ in {r['seconds']:.0f} s")
    print0(f"  selection: {r['mandatory']} mandatory (specials, byte base) + the most frequent "
           f"tokens, closed under BPE merges; {r['off_top']} kept tokens are outside the plain "
           f"top-{r['vocab_size']} by count")
    caveat = "" if r["source"].endswith(".model") else (
        " by merges (tiktoken still emits one when a whole pre-token equals it)")
    print0(f"  the official selection (top by count, no closure) would keep "
           f"{r['naive_unreachable']} tokens that BPE cannot produce{caveat}")
    print0(f"  coverage: {r['coverage']:.2%} of the {r['counted']:,} tokens counted in "
           f"{', '.join(r['stats_files'])} are kept as they are")
    for split in ("train", "val"):
        s = r[split]
        print0(f"  {split}.bin: {s['tokens_before']:,} -> {s['tokens_after']:,} tokens "
               f"({s['tokens_after'] / s['tokens_before'] - 1:+.2%}), "
               f"{s['tokens_before'] / s['bytes']:.4f} -> {s['tokens_after'] / s['bytes']:.4f} "
               "tokens/byte")
    e0, n0 = embedding_params(args, r["source_vocab"])
    e1, n1 = embedding_params(args, r["vocab_size"])
    print0(f"  embedding + head of preset {args.preset}: {e0:,} ({e0 / n0:.1%} of {n0:,}) -> "
           f"{e1:,} ({e1 / n1:.1%} of {n1:,}) parameters")
    if "checkpoint" in r:
        print0(f"  checkpoint with the kept embedding/head rows: {r['checkpoint']}")


# --- the comparison -------------------------------------------------------------------------------
def compare(args, ctx):
    """GPT-2 and its prunings to --compare_sizes on the built-in corpus; one tiny model per
    tokenizer, each trained on the same number of bytes of text and evaluated on the same
    validation text."""
    # bits per byte compare across tokenizers, token losses do not
    src = args.compare_data_dir.rstrip("/")
    if ctx.master and not os.path.isfile(os.path.join(src, "meta.json")):
        data.prepare(out_dir=os.path.dirname(src) or ".", name=os.path.basename(src),
                     tokenizer="gpt2", num_proc=args.num_proc)
    runs = [("gpt2", src)]
    for size in sorted(args.compare_sizes, reverse=True):
        out = f"{src}-pruned{size}"
        if ctx.master:  # rank 0 prunes; the others wait at the barrier below
            print_report(prune(args, src, size, out), args)
        runs.append((f"gpt2 pruned to {size}", out))
    reference = args.compare_reference
    if reference and os.path.isfile(os.path.join(reference, "meta.json")):
        name = os.path.basename(reference.rstrip("/"))
        runs.append((f"{name} (trained on the corpus)", reference))
    if dist.is_initialized():
        dist.barrier()  # rank 0 wrote the data folders
    rows, curves = [], {}
    for name, data_dir in runs:
        meta = data.load_meta(data_dir)
        train_tpb, val_tpb = (meta[s]["tokens"] / meta[s]["bytes"] for s in ("train", "val"))
        # equal bytes of text, not equal tokens: a smaller vocabulary needs more tokens per byte
        steps = max(1, round(args.compare_bytes * train_tpb / args.batch_tokens))
        run_args = with_args(args, data_dir=data_dir, eval_tokens=round(args.eval_bytes * val_tpb))
        torch.manual_seed(args.seed)
        model = build_model(run_args, meta["vocab_size"])
        out_dir = os.path.join(args.out_dir, os.path.basename(data_dir.rstrip("/")))
        summary = train(model, run_args, ctx, out_dir=out_dir, max_tokens=steps * args.batch_tokens)
        # bits per byte against bytes of text: the two axes on which tokenizers compare
        curves[name] = val_curve([out_dir], [summary["steps"]], x="tokens", y="val_bpb",
                                 x_scale=1 / train_tpb)
        emb, total = embedding_params(args, meta["vocab_size"])
        # coverage: 1 for GPT-2 itself; none for the reference, whose ids are not GPT-2's
        coverage = meta.get("pruned", {}).get("coverage", 1.0 if "gpt2" == name else math.nan)
        rows.append((name, meta["vocab_size"], coverage, train_tpb, val_tpb, emb, total,
                     summary["tokens"], summary["tokens"] / train_tpb, summary["val_bpb"],
                     summary["wall_s"]))
    print0(f"\npreset {args.preset}, {args.compare_bytes:,} bytes of training text per run, val "
           f"bpb on the first ~{args.eval_bytes:,} bytes of {src}/val.bin text (coverage: share "
           "of train tokens kept as they are)")
    print0(compare_table(rows))
    if ctx.master:
        plot_curves(curves, os.path.join(args.out_dir, "compare.png"),
                    f"preset {args.preset}, one model per tokenizer",
                    xlabel="bytes of training text", ylabel="val bits per byte")
    return rows


def compare_table(rows):
    """The comparison as a Markdown table, one line per tokenizer."""
    header = ("tokenizer", "vocab", "coverage", "tok/byte train", "tok/byte val", "emb+head params",
              "tokens trained", "bytes trained", "val bpb", "train s")
    lines = ["| " + " | ".join(header) + " |\n|" + "---|" * len(header)]
    for n, v, c, tt, tv, e, t, tok, b, bpb, w in rows:
        cells = (n, f"{v:,}", "-" if math.isnan(c) else f"{c:.2%}", f"{tt:.4f}", f"{tv:.4f}",
                 f"{e:,} ({e / t:.0%})", f"{tok:,}", f"{b:,.0f}", f"{bpb:.4f}", f"{w:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- the script -----------------------------------------------------------------------------------
def check_flags(parser, args, ctx):
    """Flags that this run would ignore are refused; the rest are checked, all problems at once."""
    # pruning alone reads --data_dir, slices --init_from and reports for --preset (and the shape
    # flags); the rest of the shared flags only train, and so do the comparison's
    used_by_pruning = {"data_dir", "init_from", "preset", "device", *SHAPE_FLAGS}
    training = {a.dest for a in parser._actions if a.dest not in used_by_pruning and
                getattr(a.container, "title", None) not in ("pruning", "options")}
    if not args.compare:
        refuse(given_flags(parser, training - {"compare"}),
               "without --compare: only the comparison trains")
    else:
        refuse(given_flags(parser, {"vocab_size", "out_data_dir", "out_checkpoint", "init_from"}),
               "with --compare (it prunes GPT-2 to --compare_sizes and trains fresh models)")
    problems = [f"--{flag} must be positive" for flag in ("num_proc", "compare_bytes", "eval_bytes")
                if getattr(args, flag) <= 0]
    if args.compare:
        check_args(args, ctx)
        problems += [f"--compare_sizes {s}: must lie in 257..50256 (GPT-2's 256 bytes + "
                     "<|endoftext|> are mandatory)"
                     for s in args.compare_sizes if not 257 <= s < 50257]
    if args.init_from and not os.path.isfile(args.init_from):
        problems.append(f"--init_from {args.init_from}: no such file")
    try:
        embedding_params(args, 1024)  # the report needs it at the end: a bad shape fails now
    except UsageError as e:
        problems.append(str(e))
    if problems:
        raise UsageError("; ".join(problems))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = parser.add_argument_group("pruning")
    g.add_argument("--vocab_size", type=int, default=4096,
                   help="ids of the pruned tokenizer, specials and byte base included")
    g.add_argument("--stats_files", nargs="+", default=None,
                   help="token files to count frequencies on (default: <data_dir>/train.bin); they "
                        "must be tokenized by the tokenizer of --data_dir")
    g.add_argument("--out_data_dir", default="",
                   help="output data folder (default: <data_dir>-pruned<vocab_size>)")
    g.add_argument("--out_checkpoint", default="",
                   help="where the sliced --init_from goes (default: ckpt_pruned<V>.pt beside it)")
    g.add_argument("--num_proc", type=int, default=os.cpu_count() or 1,
                   help="processes that re-tokenize train/val")
    g = parser.add_argument_group("comparison")
    g.add_argument("--compare", action="store_true",
                   help="prune GPT-2 to --compare_sizes and train one --preset model per tokenizer "
                        "on --compare_bytes of text; prints a table")
    g.add_argument("--compare_data_dir", default="data/stdlib-gpt2",
                   help="the built-in corpus tokenized by GPT-2 (prepared if missing)")
    g.add_argument("--compare_sizes", type=int, nargs="+", default=[8192, 16384],
                   help="pruned vocabulary sizes to compare")
    g.add_argument("--compare_reference", default="data/stdlib",
                   help="also train on this data folder (data.py's BPE trained on the same corpus, "
                        "same split), if it exists; '' to skip")
    g.add_argument("--compare_bytes", type=int, default=600_000,
                   help="training budget of every run in bytes of text "
                        "(steps = bytes x tokens/byte / batch_tokens)")
    g.add_argument("--eval_bytes", type=int, default=100_000,
                   help="validation text per evaluation, in bytes (the same text for all)")
    add_train_args(parser)
    alias(parser, "--init_from", "--checkpoint")  # the old name still works
    set_help(parser, init_from="also slice this ckpt.pt (trained with --data_dir's tokenizer) to "
             "the kept embedding/head rows",
             preset="shape whose embedding share the report shows, and that --compare trains")
    # sized for ~10 minutes of --compare on 2 CPU cores: GPT-2's 50k-row head is most of a small
    # model's cost
    parser.set_defaults(preset="nano", batch_tokens=4096, eval_every=1000, ckpt_every=50,
                        out_dir="out_prune")
    args = parser.parse_args()
    ctx = setup(args)
    print0(json.dumps(vars(args)))
    check_flags(parser, args, ctx)
    if args.compare:
        compare(args, ctx)
    elif ctx.master:  # pruning is one process's work; the others wait at the barrier
        out_dir = args.out_data_dir or f"{args.data_dir.rstrip('/')}-pruned{args.vocab_size}"
        print_report(prune(args, args.data_dir, args.vocab_size, out_dir), args)
    if dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    cli(main)
