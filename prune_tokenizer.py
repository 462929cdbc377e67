"""
Compact tokenizer (Tang et al. 2024, "Rethinking Optimization and Architecture for Tiny Language Models",
arXiv 2402.02791, "Compact Tokenizer"; PanGu-pi Pro): keep only the V most frequent tokens of a big tokenizer, so a small
model spends fewer parameters on its embedding and head (PanGu-pi-1B Pro: 100,883 -> 48,000 ids).

  python data.py && python prune_tokenizer.py          # prune data/stdlib's 8192-piece BPE to 4096 (~1 min CPU)
  python prune_tokenizer.py --data_dir data/stdlib-gpt2 --vocab_size 16384 --init_from out/ckpt.pt
  python prune_tokenizer.py --compare                  # GPT-2 -> 8k and 16k; tiny models trained on equal bytes

One run: statistics (token_counts.tsv, top tokens decoded) -> selection -> a tokenizer file that stock
tiktoken / sentencepiece load -> train.bin and val.bin re-tokenized document by document -> with --init_from,
a copy of that model with its embedding and head rows sliced to the kept ids (ready for `--init_from`, or for
inheritune.py: the PanGu-pi Pro recipe). The output folder is a data folder: `train.py --data_dir <it>`.

Unlike the official script, the selection is closed under BPE merges: every kept token can still be produced,
because every piece its merges pass through is kept too (otherwise its row is dead and the text needs more tokens).
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
import tiktoken
import torch
import torch.distributed as dist
from sentencepiece import sentencepiece_model_pb2
from tiktoken.load import load_tiktoken_bpe

import data
from model import GPT, GPTConfig
from train import (SHAPE_FLAGS, HelpFormatter, UsageError, add_train_args, alias, build_model, check_args, cli, given_flags,
                   load_checkpoint, model_config, model_from_checkpoint, plot_curves, print0, refuse, save_checkpoint,
                   set_help, setup, train, val_curve)

SP_NORMAL, SP_BPE = 1, 2  # sentencepiece ModelProto enums: piece type NORMAL, model type BPE


# --- 1. statistics -------------------------------------------------------------------------------------------
def token_counts(paths, vocab_size, chunk_tokens=1 << 22):
    """counts[i] = occurrences of id i in all token files. Streamed over the memmaps chunk by chunk, so a corpus
    larger than memory can be counted; the sum of the chunks' bincounts equals np.bincount of the whole."""
    counts = np.zeros(vocab_size, np.int64)
    progress = data.Progress("counting tokens", sum(data.file_info(p)["n_tokens"] for p in paths), " tokens")
    done = 0
    for path in paths:
        tokens = data.read_tokens(path, vocab_size=vocab_size)
        for start in range(0, len(tokens), chunk_tokens):
            counts += np.bincount(tokens[start:start + chunk_tokens], minlength=vocab_size)
            done += len(tokens[start:start + chunk_tokens])
            progress.update(done)
    return counts


# --- 2. selection --------------------------------------------------------------------------------------------
def merge_path(piece, rank):
    """Byte-pair encoding of one piece (bytes: byte-level BPE; str: sentencepiece BPE) under `rank` (piece -> id,
    lower merges first): start from its single bytes/characters and merge the adjacent pair whose concatenation has
    the lowest rank, leftmost on ties, as tiktoken and sentencepiece do (tiktoken first looks a whole pre-token up
    in the vocabulary; merges are what the rest of it needs). Returns (final parts, pieces merged)."""
    parts, merged = [piece[i:i + 1] for i in range(len(piece))], []
    while len(parts) > 1:
        ranks = [rank.get(a + b, math.inf) for a, b in zip(parts, parts[1:])]
        i = min(range(len(ranks)), key=ranks.__getitem__)
        if ranks[i] == math.inf:
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
        merged.append(parts[i])
    return parts, merged


def is_reachable(piece, rank):
    """A kept piece is reachable iff BPE of its own bytes/characters under the kept ranks yields exactly it."""
    return piece in rank and merge_path(piece, rank)[0] == [piece]


def prune_vocab(counts, vocab_size, mandatory, rank):
    """Old ids to keep, ascending (= new-id order, so old -> new is monotone). First the mandatory ids (specials
    and the byte base), then tokens by decreasing count, each together with every piece its merges pass through
    under the full vocabulary and the single bytes/characters they start from (its closure). With those pieces
    kept, BPE under the kept ranks takes the same merges, so every kept token stays reachable. A token whose
    closure no longer fits is skipped (the paper keeps 'the most frequent tokens'; the closure is what the
    official script leaves out)."""
    keep, piece_of = set(mandatory), {i: p for p, i in rank.items()}
    if len(keep) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(keep)} mandatory tokens")
    for i in np.argsort(-np.asarray(counts), kind="stable").tolist():  # ties: lower id (earlier merge) first
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


# --- 3. output that stock libraries load ---------------------------------------------------------------------
def tiktoken_file(pieces):
    """The .tiktoken format (tiktoken.load.load_tiktoken_bpe): one 'base64(bytes) rank' line per token, ranks
    0..n-1 in the original order. Special tokens are no ranks: tiktoken_extras puts them after the last one."""
    return "".join(f"{base64.b64encode(p).decode()} {r}\n" for r, p in enumerate(pieces)).encode()


def tiktoken_extras(pat_str, special_names, n_ranks):
    """FILE.tiktoken.json beside the rank file: the source's pre-split regex and its special tokens, numbered
    after the n_ranks ranks in their old order. A pruned cl100k / o200k then splits text as its source does;
    without this file data.Tokenizer would assume GPT-2's regex and <|endoftext|> alone."""
    specials = {name: n_ranks + k for k, name in enumerate(special_names)}
    return json.dumps({"pat_str": pat_str, "special_tokens": specials}, indent=1).encode()


def sentencepiece_file(model_bytes, kept_ids):
    """The ModelProto with only the kept pieces, in their old order with their types and scores (scores are the
    merge priorities of BPE). The special ids of the trainer spec follow their pieces."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_bytes)
    kept = [copy.deepcopy(proto.pieces[i]) for i in kept_ids]
    del proto.pieces[:]
    proto.pieces.extend(kept)
    new_id = {old: new for new, old in enumerate(kept_ids)}
    spec = proto.trainer_spec
    spec.vocab_size = len(kept_ids)
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = (new_id.get(i, -1) for i in (spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id))
    return proto.SerializeToString()


# --- 4. remapping --------------------------------------------------------------------------------------------
def remap_tokens(tokens, old, new, num_proc=1, label="remap"):
    """Re-tokenize a token file's ids document by document: each [old eot] + doc becomes [new eot] +
    new.encode(old.decode(doc)), the same as encoding the original text with the new tokenizer (data.prepare's
    layout). Returns (ids, bytes of text)."""
    tokens = np.asarray(tokens)
    starts = np.flatnonzero(tokens == old.eot_id)
    if len(tokens) and (not len(starts) or starts[0] != 0):
        raise data.DataError(f"{label}: the ids do not start with the document separator {old.eot_id}; not a data.py token file")
    ends = np.append(starts[1:], len(tokens))
    progress, docs = data.Progress(f"{label}: decoding", len(starts), " documents"), []
    for k, (a, b) in enumerate(zip(starts, ends)):
        docs.append(old.decode(tokens[a + 1:b]))
        progress.update(k + 1)
    return data.tokenize(docs, new.name, num_proc, label)  # which shows its own progress


def remap_embeddings(model_args, state_dict, kept_ids):
    """E_new = E_old[kept_ids], rows in new-id order; the same for an untied head (a tied one stays tied, since
    GPT re-ties on load). Everything else is unchanged. Returns (model_args, state_dict) of the small-vocab model."""
    idx = torch.as_tensor(kept_ids, dtype=torch.long)
    sd = dict(state_dict)
    sd["wte.weight"] = state_dict["wte.weight"][idx].clone()
    if "lm_head.weight" in sd:
        sd["lm_head.weight"] = sd["wte.weight"] if model_args.get("tie_embeddings", True) else state_dict["lm_head.weight"][idx].clone()
    return {**model_args, "vocab_size": len(kept_ids)}, sd


# --- the pipeline ---------------------------------------------------------------------------------------------
def source_vocab(tok):
    """What pruning needs of a data.Tokenizer: rank (mergeable piece -> id), mandatory ids, names (id -> piece, for
    people), write(kept ids) -> tokenizer file bytes, and its suffix. Mandatory: tiktoken, the 256 single bytes and
    <|endoftext|>; sentencepiece BPE, every piece that is not NORMAL (unknown, control, user-defined, <0x00>..<0xFF>)."""
    if tok.name.endswith(".model"):
        model_bytes = Path(tok.name).read_bytes()
        proto = sentencepiece_model_pb2.ModelProto.FromString(model_bytes)
        if proto.trainer_spec.model_type != SP_BPE:
            raise data.DataError(f"{tok.name}: a sentencepiece model of type {proto.trainer_spec.model_type}, not BPE (2); only BPE is pruned here")
        rank = {p.piece: i for i, p in enumerate(proto.pieces) if p.type == SP_NORMAL}
        scores = [proto.pieces[i].score for i in rank.values()]
        if any(a <= b for a, b in zip(scores, scores[1:])):  # BPE merges by score; the trainer writes them in that order
            raise data.DataError(f"{tok.name}: its NORMAL pieces are not in decreasing score order, so ids are not the merge order")
        return dict(rank=rank, mandatory=[i for i, p in enumerate(proto.pieces) if p.type != SP_NORMAL],
                    names=dict(enumerate(p.piece for p in proto.pieces)), suffix=".model",
                    write=lambda kept: {".model": sentencepiece_file(model_bytes, kept)})
    enc = tok._tt
    rank, specials = enc._mergeable_ranks, enc._special_tokens  # piece -> id; name -> id
    names = {i: p for p, i in rank.items()} | {i: name.encode() for name, i in specials.items()}

    def write(kept):
        pieces = [names[i] for i in kept if i in names and names[i] in rank]
        kept_specials = [name for name, i in sorted(specials.items(), key=lambda kv: kv[1])]
        return {".tiktoken": tiktoken_file(pieces), ".tiktoken.json": tiktoken_extras(enc._pat_str, kept_specials, len(pieces))}
    return dict(rank=rank, mandatory=sorted(i for p, i in rank.items() if len(p) == 1) + sorted(specials.values()),
                names=names, suffix=".tiktoken", write=write)


def kept_in_new_order(kept, tok):
    """Old ids in new-id order. A pruned .tiktoken puts its special tokens after the last rank, in their old order
    (<|endoftext|> first for GPT-2 and cl100k); sentencepiece keeps every piece's relative position."""
    if tok.name.endswith(".model"):
        return kept
    specials = set(tok._tt._special_tokens.values())
    return [i for i in kept if i not in specials] + sorted(specials)


def check_inputs(args, vocab_size, tok, stats_files, mandatory):
    """Every problem at once, before any long work: vocabulary size, foreign token files, checkpoint vocabulary."""
    problems = []
    if not len(mandatory) <= vocab_size < tok.vocab_size:
        problems.append(f"--vocab_size {vocab_size}: must lie in {len(mandatory)}..{tok.vocab_size - 1}, since {tok.name} has "
                        f"{tok.vocab_size} ids of which {len(mandatory)} are mandatory (specials and the byte base)")
    for path in stats_files:
        info = data.file_info(path)
        if info["fingerprint"] != tok.fingerprint or info["vocab_size"] != tok.vocab_size:
            problems.append(f"--stats_files {path}: tokenized with another tokenizer ({info['vocab_size']} ids, fingerprint "
                            f"{info['fingerprint']}) than {tok.name} ({tok.vocab_size} ids, fingerprint {tok.fingerprint}), the one being pruned")
    if args.init_from:
        vocab = model_from_checkpoint(args.init_from, "--init_from").config.vocab_size  # a checkpoint that is no GPT of ours fails here, not at the end
        if vocab != tok.vocab_size:
            problems.append(f"--init_from {args.init_from}: its vocabulary is {vocab}, but {tok.name} has {tok.vocab_size} ids; "
                            "give a checkpoint trained on data tokenized by it")
    if problems:
        raise UsageError("; ".join(problems))


def prune(args, data_dir, vocab_size, out_dir):
    """Statistics -> selection -> tokenizer file -> re-tokenized train/val (+ checkpoint). Returns the report."""
    t0, tok, meta = time.time(), data.load_tokenizer(data_dir), data.load_meta(data_dir)
    stats_files = args.stats_files or [os.path.join(data_dir, "train.bin")]
    vocab = source_vocab(tok)
    rank, mandatory, names = vocab["rank"], set(vocab["mandatory"]), vocab["names"]
    check_inputs(args, vocab_size, tok, stats_files, mandatory)
    if Path(out_dir).resolve() == Path(data_dir).resolve():  # it would delete the source's meta.json and overwrite its files
        raise UsageError(f"--out_data_dir {out_dir} is the source --data_dir: choose another folder")
    counts = token_counts(stats_files, tok.vocab_size)
    kept = kept_in_new_order(prune_vocab(counts, vocab_size, mandatory, rank), tok)
    out, spec = Path(out_dir), "tokenizer" + vocab["suffix"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # written last: its presence says the folder is complete
    for suffix, blob in vocab["write"](kept).items():  # the tokenizer file (and a .tiktoken's regex + specials)
        (out / ("tokenizer" + suffix)).write_bytes(blob)
    new = data.Tokenizer(out / spec)
    new_id = {old: n for n, old in enumerate(kept)}
    new_rank = {names[i]: new_id[i] for i in kept if names[i] in rank}
    assert all(is_reachable(p, new_rank) for p in new_rank)  # the closure guarantees it; cheap to check

    # the official script's selection (mandatory + top by count, no closure), to show what the closure prevents
    by_count = np.argsort(-counts, kind="stable").tolist()
    naive = mandatory | set([i for i in by_count if i not in mandatory][:vocab_size - len(mandatory)])
    naive_rank = {p: i for p, i in rank.items() if i in naive}
    with open(out / "token_counts.tsv", "w") as f:  # every source token, most frequent first, decoded
        f.write("old_id\tcount\tshare\tnew_id\tpiece\n")
        for i in by_count:
            piece = names.get(i, b"<other special>")  # e.g. cl100k's specials besides <|endoftext|>, not kept
            piece = piece.decode("utf-8", "backslashreplace") if isinstance(piece, bytes) else piece
            f.write(f"{i}\t{counts[i]}\t{counts[i] / counts.sum():.3e}\t{new_id.get(i, '-')}\t{json.dumps(piece, ensure_ascii=False)}\n")
    report = dict(source=tok.name, source_vocab=tok.vocab_size, vocab_size=len(kept), mandatory=len(mandatory),
                  off_top=len(set(kept) - naive), naive_unreachable=sum(not is_reachable(p, naive_rank) for p in naive_rank),
                  counted=int(counts.sum()), coverage=float(counts[kept].sum() / counts.sum()), stats_files=list(map(str, stats_files)))
    new_meta = dict(name=out.name, tokenizer=spec, vocab_size=new.vocab_size, eot_id=new.eot_id, fingerprint=new.fingerprint,
                    dtype=data.token_dtype(new.vocab_size).name, pruned=report)
    for split in ("train", "val"):
        src = os.path.join(data_dir, f"{split}.bin")
        ids, n_bytes = remap_tokens(data.read_tokens(src, tok.vocab_size, tok.fingerprint), tok, new, args.num_proc, f"{out.name}/{split}")
        if n_bytes != data.file_info(src)["n_bytes"]:  # decode(encode(text)) != text: the remap would change the data
            raise data.DataError(f"{src}: decoding gives {n_bytes} bytes of text, its header says {data.file_info(src)['n_bytes']}")
        data.write_tokens(out / f"{split}.bin", ids, new.vocab_size, n_bytes, new.fingerprint)
        new_meta[split] = dict(documents=int(np.sum(ids == new.eot_id)), tokens=len(ids), bytes=n_bytes, tokens_per_byte=round(len(ids) / n_bytes, 6))
        report[split] = dict(tokens_before=meta[split]["tokens"], tokens_after=len(ids), bytes=n_bytes)
    tmp = out / ".meta.json.tmp"
    tmp.write_text(json.dumps(new_meta, indent=2) + "\n")
    os.replace(tmp, out / "meta.json")
    if args.init_from:
        ckpt = load_checkpoint(args.init_from, "--init_from", weights=True)
        model_args, state_dict = remap_embeddings(ckpt["model_args"], ckpt["model"], kept)
        report["checkpoint"] = args.out_checkpoint or os.path.join(os.path.dirname(args.init_from), f"ckpt_pruned{len(kept)}.pt")
        save_checkpoint(report["checkpoint"], {"model_args": model_args, "model": state_dict, "pruned_from": args.init_from,
                                               "tokenizer": str(out / spec), "fingerprint": new.fingerprint})
    report.update(out_dir=str(out), seconds=round(time.time() - t0, 1))
    return report


def embedding_params(args, vocab_size):
    """(token embedding + head parameters, all parameters) of the --preset model (shape flags applied) with this
    vocabulary; a tied head counts once."""
    with torch.device("meta"):  # shapes only: no memory or init time, even for big presets
        model = GPT(model_config(args, vocab_size))
    n_head = 0 if model.config.tie_embeddings else model.lm_head.weight.numel()
    return model.wte.weight.numel() + n_head, model.num_params()


def print_report(r, args):
    print0(f"pruned {r['source']} ({r['source_vocab']:,} ids) to {r['vocab_size']:,} ids -> {r['out_dir']}/ in {r['seconds']:.0f} s")
    print0(f"  selection: {r['mandatory']} mandatory (specials, byte base) + the most frequent tokens, closed under BPE merges; "
           f"{r['off_top']} kept tokens are outside the plain top-{r['vocab_size']} by count")
    caveat = "" if r["source"].endswith(".model") else " by merges (tiktoken still emits one when a whole pre-token equals it)"
    print0(f"  the official selection (top by count, no closure) would keep {r['naive_unreachable']} tokens that BPE cannot produce{caveat}")
    print0(f"  coverage: {r['coverage']:.2%} of the {r['counted']:,} tokens counted in {', '.join(r['stats_files'])} are kept as they are")
    for split in ("train", "val"):
        s = r[split]
        print0(f"  {split}.bin: {s['tokens_before']:,} -> {s['tokens_after']:,} tokens ({s['tokens_after'] / s['tokens_before'] - 1:+.2%}), "
               f"{s['tokens_before'] / s['bytes']:.4f} -> {s['tokens_after'] / s['bytes']:.4f} tokens/byte")
    (e0, n0), (e1, n1) = embedding_params(args, r["source_vocab"]), embedding_params(args, r["vocab_size"])
    print0(f"  embedding + head of preset {args.preset}: {e0:,} ({e0 / n0:.1%} of {n0:,}) -> {e1:,} ({e1 / n1:.1%} of {n1:,}) parameters")
    if "checkpoint" in r:
        print0(f"  checkpoint with the kept embedding/head rows: {r['checkpoint']}")


# --- the comparison ------------------------------------------------------------------------------------------
def compare(args, ctx):
    """GPT-2 and its prunings to --compare_sizes on the built-in corpus; one tiny model per tokenizer, each trained
    on the same number of bytes of text and evaluated on the same validation text (bits per byte compare across
    tokenizers, token losses do not)."""
    src = args.compare_data_dir.rstrip("/")
    if ctx.master and not os.path.isfile(os.path.join(src, "meta.json")):
        data.prepare(out_dir=os.path.dirname(src) or ".", name=os.path.basename(src), tokenizer="gpt2", num_proc=args.num_proc)
    runs = [("gpt2", src)]
    for size in sorted(args.compare_sizes, reverse=True):
        out = f"{src}-pruned{size}"
        if ctx.master:
            print_report(prune(args, src, size, out), args)
        runs.append((f"gpt2 pruned to {size}", out))
    if args.compare_reference and os.path.isfile(os.path.join(args.compare_reference, "meta.json")):
        runs.append((f"{os.path.basename(args.compare_reference.rstrip('/'))} (trained on the corpus)", args.compare_reference))
    if dist.is_initialized():
        dist.barrier()  # rank 0 wrote the data folders
    rows, curves = [], {}
    for name, data_dir in runs:
        meta = data.load_meta(data_dir)
        train_tpb, val_tpb = (meta[s]["tokens"] / meta[s]["bytes"] for s in ("train", "val"))
        steps = max(1, round(args.compare_bytes * train_tpb / args.batch_tokens))
        run_args = argparse.Namespace(**{**vars(args), "data_dir": data_dir, "eval_tokens": round(args.eval_bytes * val_tpb)})
        torch.manual_seed(args.seed)
        model = build_model(run_args, meta["vocab_size"])
        summary = train(model, run_args, ctx, out_dir=os.path.join(args.out_dir, os.path.basename(data_dir.rstrip("/"))),
                        max_tokens=steps * args.batch_tokens)
        out_dir = os.path.join(args.out_dir, os.path.basename(data_dir.rstrip("/")))
        # bits per byte against bytes of text: the two axes on which tokenizers compare
        curves[name] = val_curve([out_dir], [summary["steps"]], x="tokens", y="val_bpb", x_scale=1 / train_tpb)
        emb, total = embedding_params(args, meta["vocab_size"])
        rows.append((name, meta["vocab_size"], meta.get("pruned", {}).get("coverage", 1.0 if "gpt2" == name else math.nan), train_tpb, val_tpb, emb, total,
                     summary["tokens"], summary["tokens"] / train_tpb, summary["val_bpb"], summary["wall_s"]))
    header = ("tokenizer", "vocab", "coverage", "tok/byte train", "tok/byte val", "emb+head params", "tokens trained",
              "bytes trained", "val bpb", "train s")
    lines = [header] + [(n, f"{v:,}", f"{c:.2%}" if c == c else "-", f"{tt:.4f}", f"{tv:.4f}", f"{e:,} ({e / t:.0%})", f"{tok:,}", f"{b:,.0f}",
                         f"{bpb:.4f}", f"{w:.0f}") for n, v, c, tt, tv, e, t, tok, b, bpb, w in rows]
    print0(f"\npreset {args.preset}, {args.compare_bytes:,} bytes of training text per run, val bpb on the first "
           f"~{args.eval_bytes:,} bytes of {src}/val.bin text (coverage: share of train tokens kept as they are)")
    print0("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for line in lines[1:]:
        print0("| " + " | ".join(line) + " |")
    if ctx.master:
        plot_curves(curves, os.path.join(args.out_dir, "compare.png"), f"preset {args.preset}, one model per tokenizer",
                    xlabel="bytes of training text", ylabel="val bits per byte")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = parser.add_argument_group("pruning")
    g.add_argument("--vocab_size", type=int, default=4096, help="ids of the pruned tokenizer, specials and byte base included")
    g.add_argument("--stats_files", nargs="+", default=None, help="token files to count frequencies on (default: "
                   "<data_dir>/train.bin); they must be tokenized by the tokenizer of --data_dir")
    g.add_argument("--out_data_dir", default="", help="output data folder (default: <data_dir>-pruned<vocab_size>)")
    g.add_argument("--out_checkpoint", default="", help="where the sliced --init_from goes (default: ckpt_pruned<V>.pt "
                   "beside it)")
    g.add_argument("--num_proc", type=int, default=os.cpu_count() or 1, help="processes that re-tokenize train/val")
    g = parser.add_argument_group("comparison")
    g.add_argument("--compare", action="store_true", help="prune GPT-2 to --compare_sizes and train one --preset model per "
                   "tokenizer on --compare_bytes of text; prints a table")
    g.add_argument("--compare_data_dir", default="data/stdlib-gpt2", help="the built-in corpus tokenized by GPT-2 "
                   "(prepared if missing)")
    g.add_argument("--compare_sizes", type=int, nargs="+", default=[8192, 16384], help="pruned vocabulary sizes to compare")
    g.add_argument("--compare_reference", default="data/stdlib", help="also train on this data folder (data.py's BPE "
                   "trained on the same corpus, same split), if it exists; '' to skip")
    g.add_argument("--compare_bytes", type=int, default=600_000, help="training budget of every run in bytes of text "
                   "(steps = bytes x tokens/byte / batch_tokens)")
    g.add_argument("--eval_bytes", type=int, default=100_000, help="validation text per evaluation, in bytes (the same "
                   "text for all)")
    add_train_args(parser)
    alias(parser, "--init_from", "--checkpoint")
    set_help(parser, init_from="also slice this ckpt.pt (trained with --data_dir's tokenizer) to the kept embedding/head "
             "rows", preset="shape whose embedding share the report shows, and that --compare trains")
    # sized for ~10 minutes of --compare on 2 CPU cores: GPT-2's 50k-row head is most of a small model's cost
    parser.set_defaults(preset="nano", batch_tokens=4096, eval_every=1000, ckpt_every=50, out_dir="out_prune")
    args = parser.parse_args()
    ctx = setup(args)
    print0(json.dumps(vars(args)))
    # pruning alone reads --data_dir, slices --init_from and reports for --preset (and the shape flags); the rest
    # of the shared flags only train, and so do the comparison's
    used_by_pruning = {"data_dir", "init_from", "preset", "device", *SHAPE_FLAGS}
    training = {a.dest for a in parser._actions if a.dest not in used_by_pruning and
                getattr(a.container, "title", None) not in ("pruning", "options")}
    if not args.compare:
        refuse(given_flags(parser, training - {"compare"}), "without --compare: only the comparison trains")
    else:
        refuse(given_flags(parser, {"vocab_size", "out_data_dir", "out_checkpoint", "init_from"}),
               "with --compare (it prunes GPT-2 to --compare_sizes and trains fresh models)")
    problems = [f"--{flag} must be positive" for flag in ("num_proc", "compare_bytes", "eval_bytes") if getattr(args, flag) <= 0]
    if args.compare:
        check_args(args, ctx)
        problems += [f"--compare_sizes {s}: must lie in 257..50256 (GPT-2's 256 bytes + <|endoftext|> are mandatory)"
                     for s in args.compare_sizes if not 257 <= s < 50257]
    if args.init_from and not os.path.isfile(args.init_from):
        problems.append(f"--init_from {args.init_from}: no such file")
    try:
        embedding_params(args, 1024)  # the report needs it at the end: a bad shape fails now, not after the work
    except UsageError as e:
        problems.append(str(e))
    if problems:
        raise UsageError("; ".join(problems))
    if args.compare:
        compare(args, ctx)
    elif ctx.master:
        print_report(prune(args, args.data_dir, args.vocab_size, args.out_data_dir or f"{args.data_dir.rstrip('/')}-pruned{args.vocab_size}"), args)
    if dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    cli(main)
