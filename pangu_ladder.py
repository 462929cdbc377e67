"""
PanGu-pi Pro's ladder (Tang et al. 2024, arXiv 2402.02791, fig. 1) as one command: five rungs, each
adding one strategy to the one before. Every rung trains on the same number of bytes of text and is
evaluated in bits per byte on the same validation text, so rungs with different tokenizers compare.

  python data.py --tokenizer gpt2 --out_data_dir data/stdlib-gpt2  # once: stdlib in GPT-2 tokens
  python pangu_ladder.py --data_dir data/stdlib-gpt2                 # the CPU demo

  1 baseline     the big tokenizer (--data_dir, GPT-2), the --wide shape, random init
  2 +tokenizer   GPT-2 pruned to --vocab_size (prune_tokenizer.prune: most frequent ids, closed
                 under merges)
  3 +deep        the --deep shape (about the --wide shape's parameters at that vocabulary)
  4 +inherit     from a reference of --reference_layers x the --wide width, trained here on the
                 pruned data for --train_bytes; layer importance picks the deep shape's layers,
                 learned masks its widths
  5 +2 rounds    as 4, but round 1 gets 2/3 of the bytes and round 2 half of round 1's batches,
                 drawn by the frozen round-1 model's loss (multiround.py): the same bytes in all

The reference's own training is not counted in rung 4's or 5's bytes or FLOPs (the paper inherits
from a 7B model trained elsewhere); the table names its cost apart. Seeds change the init of rungs
1-3 and the mask noise of rungs 4-5; the data order is the same for all. Outputs:
<out_dir>/ladder.json, ladder.png.
"""
import argparse
import dataclasses
import json
import os

import torch

import data
import inheritune
import multiround
import prune_tokenizer
from model import GPT, GPTConfig
from train import (SHAPE_FLAGS, HelpFormatter, UsageError, add_train_args, check_args, cli,
                   given_flags, new_figure, print0, refuse, save_figure, setup, train, whole,
                   with_args)

RUNGS = ("1 baseline", "2 +tokenizer", "3 +deep", "4 +inherit", "5 +2 rounds")


def steps_for_bytes(n_bytes, data_dir, batch_tokens):
    """Optimizer steps that read about n_bytes of training text in this data folder's tokens."""
    meta = data.load_meta(data_dir)
    # at this tokenizer's tokens per byte: a smaller vocabulary needs more tokens for the same text
    return max(1, round(n_bytes * meta["train"]["tokens"] / meta["train"]["bytes"] / batch_tokens))


def reference_config(wide, deep, n_layer):
    """The reference: the wide shape's width (heads, FFN) at n_layer layers."""
    # keeping deep.n_head heads, deep.ffn_hidden channels and deep.n_layer layers of it then gives
    # exactly the deep shape
    if (wide.head_dim != deep.head_dim or wide.n_head < deep.n_head
            or wide.ffn_hidden < deep.ffn_hidden):
        raise UsageError(f"--wide and --deep must share the head dim ({wide.head_dim} vs "
                         f"{deep.head_dim}) and --deep must be no wider: the deep shape is cut out "
                         "of a reference of the wide width")
    return dataclasses.replace(wide, n_layer=n_layer)


def mean_spread(values):
    """Mean and half the range over seeds."""
    return sum(values) / len(values), (max(values) - min(values)) / 2


def windows(tokens, starts, rows, seq_len, device):
    """Batches [rows, seq_len + 1] of consecutive tokens, one from each start."""
    size = rows * (seq_len + 1)  # +1: the target of each window's last token
    return [torch.from_numpy(tokens[i:i + size].astype("int64")).view(rows, -1).to(device)
            for i in starts]


# --- the rungs' parts -----------------------------------------------------------------------------
def pruned_data(args):
    """The data folder of rungs 2-5: --data_dir pruned to --vocab_size, made on first use."""
    pruned_dir = os.path.join(args.out_dir, f"data-pruned{args.vocab_size}")
    # prune writes meta.json last, so its presence says the folder is complete
    if not os.path.isfile(os.path.join(pruned_dir, "meta.json")):
        # the flags prune() reads: count on --data_dir's train.bin, no checkpoint to slice
        prune_args = argparse.Namespace(stats_files=None, init_from="", out_checkpoint="",
                                        num_proc=1)
        r = prune_tokenizer.prune(prune_args, args.data_dir, args.vocab_size, pruned_dir)
        print0(f"pruned {r['source_vocab']:,} -> {r['vocab_size']:,} ids, "
               f"coverage {r['coverage']:.2%}")
    return pruned_dir


def eval_flags(args, data_dir):
    """The flags of a run on data_dir, evaluated on the first --eval_bytes of its validation
    text."""
    # the same validation text for every rung, in this tokenizer's tokens
    val = data.load_meta(data_dir)["val"]
    return with_args(args, data_dir=data_dir,
                     eval_tokens=round(args.eval_bytes * val["tokens"] / val["bytes"]))


def train_on_bytes(args, ctx, name, model, data_dir, n_bytes):
    """Train model in <out_dir>/name on about n_bytes of data_dir's training text: the summary."""
    max_tokens = steps_for_bytes(n_bytes, data_dir, args.batch_tokens) * args.batch_tokens
    return train(model, eval_flags(args, data_dir), ctx, out_dir=os.path.join(args.out_dir, name),
                 max_tokens=max_tokens)


def train_reference(args, ctx, ref_cfg, pruned_dir):
    """The reference of rungs 4 and 5, trained once on the pruned data for a rung's byte budget:
    (the trained model in eval mode, its summary)."""
    torch.manual_seed(args.seed)
    reference = GPT(ref_cfg)
    summary = train_on_bytes(args, ctx, "reference", reference, pruned_dir, args.train_bytes)
    # with --fsdp the trained weights are whole only in the final checkpoint
    reference = whole(reference, os.path.join(args.out_dir, "reference")).to(ctx.device).eval()
    return reference, summary


def important_layers(reference, n_layer, pruned_dir, args, ctx):
    """(importance of every reference block, the n_layer most important), on --score_batches
    batches from the end of pruned_dir/val.bin."""
    val = data.read_tokens(os.path.join(pruned_dir, "val.bin"), reference.config.vocab_size)
    window = args.micro_batch * (args.seq_len + 1)
    if len(val) < args.score_batches * window:
        raise UsageError(f"{pruned_dir}/val.bin has {len(val):,} tokens, fewer than "
                         "--score_batches x --micro_batch x (--seq_len + 1)")
    # the end of val.bin, away from the text every evaluation scores (its start)
    ends = [len(val) - (i + 1) * window for i in range(args.score_batches)]
    batches = windows(val, ends, args.micro_batch, args.seq_len, ctx.device)
    importance = inheritune.block_importance(reference, batches)
    layers = inheritune.choose_layers(reference.config.n_layer, n_layer, "importance", importance)
    return importance, layers


def inherit_deep(reference, layers, deep, mask_batches, mask_steps, seed):
    """The deep shape cut out of the reference: its important layers, and the widths that learned
    masks keep."""
    student = inheritune.inherit_layers(reference, layers)
    scores = inheritune.learned_mask_scores(student, mask_batches, deep.n_head, deep.ffn_hidden,
                                            steps=mask_steps, seed=seed)
    return inheritune.reduce_width(student, deep.n_head, deep.ffn_hidden, scores)[0]


def two_rounds(args, ctx, model, seed, pruned_dir, train_tokens):
    """Rung 5's training of model: round 1 on 2/3 of the bytes, then round 2 on half of its
    batches, drawn by round 1's loss (hard ones more likely). Returns the summary of both."""
    round1 = train_on_bytes(args, ctx, f"rung5_seed{seed}_round1", model, pruned_dir,
                            args.train_bytes * 2 / 3)
    # round 1 read the first n_batches batches of train.bin, in order
    n_batches = round1["tokens"] // args.batch_tokens
    # each batch round 1 read, scored by the frozen round-1 model
    losses = multiround.score_batches(model, train_tokens, n_batches,
                                      args.batch_tokens // args.seq_len, args.seq_len,
                                      args.micro_batch, ctx.device, ctx.autocast)
    draw = torch.Generator().manual_seed(seed)  # the same draw on every rank
    keep = multiround.sample_hard_batches(losses, max(1, n_batches // 2), generator=draw)
    out_dir = os.path.join(args.out_dir, f"rung5_seed{seed}_round2")
    selected = os.path.join(out_dir, "selected.bin")
    if ctx.master:
        os.makedirs(out_dir, exist_ok=True)
        info = data.file_info(os.path.join(pruned_dir, "train.bin"))
        multiround.write_selection(selected, train_tokens, keep, args.batch_tokens, losses,
                                   multiround.hard_batch_probs(losses), info, selection="loss")
    if ctx.world > 1:
        torch.distributed.barrier()  # the other ranks wait for rank 0's file
    round2 = train(model, eval_flags(args, pruned_dir), ctx, out_dir=out_dir, train_bin=selected,
                   max_tokens=len(keep) * args.batch_tokens)
    # 2/3 + 1/3: the rung reads about the bytes of every other rung
    return dict(round2, tokens=round1["tokens"] + round2["tokens"])


# --- the ladder -----------------------------------------------------------------------------------
def ladder(args, ctx):
    """Train every rung for every seed; returns the rows of the table."""
    pruned_dir = pruned_data(args)
    # rung 1 keeps the big vocabulary; the other rungs and the reference use the pruned one
    vocab = {d: data.load_meta(d)["vocab_size"] for d in (args.data_dir, pruned_dir)}
    big_wide = GPTConfig.from_preset(args.wide, vocab_size=vocab[args.data_dir])
    wide = GPTConfig.from_preset(args.wide, vocab_size=vocab[pruned_dir])
    deep = GPTConfig.from_preset(args.deep, vocab_size=vocab[pruned_dir])
    ref_cfg = reference_config(wide, deep, args.reference_layers)

    reference, ref_summary = train_reference(args, ctx, ref_cfg, pruned_dir)
    # the reference's own training is not a rung's cost: the table names it apart
    ref_flops = reference.flops_per_token(args.seq_len) * ref_summary["tokens"]
    importance, layers = important_layers(reference, deep.n_layer, pruned_dir, args, ctx)
    print0(f"reference {ref_cfg.n_layer} x {ref_cfg.n_embd}: val bpb {ref_summary['val_bpb']:.4f}; "
           "layer importance " + ", ".join(f"{i}: {r:+.4f}" for i, r in enumerate(importance))
           + f"; keeping {layers}")
    train_tokens = data.read_tokens(os.path.join(pruned_dir, "train.bin"), ref_cfg.vocab_size)
    # the masks learn on the first batches of train.bin, the same for every seed
    window = args.micro_batch * (args.seq_len + 1)
    starts = [i * window for i in range(args.score_batches)]
    mask_batches = windows(train_tokens, starts, args.micro_batch, args.seq_len, ctx.device)

    results = {rung: [] for rung in RUNGS}  # rung -> [(model, summary)], one per seed
    for seed in args.seeds:
        for rung, cfg, data_dir in ((RUNGS[0], big_wide, args.data_dir),
                                    (RUNGS[1], wide, pruned_dir), (RUNGS[2], deep, pruned_dir)):
            torch.manual_seed(seed)  # the seed changes the init of rungs 1-3
            model = GPT(cfg)
            summary = train_on_bytes(args, ctx, f"rung{rung[0]}_seed{seed}", model, data_dir,
                                     args.train_bytes)
            results[rung].append((model, summary))
        # rungs 4 and 5 each cut the deep shape out of the reference afresh (seed: the mask noise)
        model = inherit_deep(reference, layers, deep, mask_batches, args.mask_steps, seed)
        summary = train_on_bytes(args, ctx, f"rung4_seed{seed}", model, pruned_dir,
                                 args.train_bytes)
        results[RUNGS[3]].append((model, summary))
        model = inherit_deep(reference, layers, deep, mask_batches, args.mask_steps, seed)
        summary = two_rounds(args, ctx, model, seed, pruned_dir, train_tokens)
        results[RUNGS[4]].append((model, summary))

    rows = table_rows(results, args, pruned_dir)
    print_table(rows, len(args.seeds))
    print0(f"rungs 4-5 inherit from a {ref_cfg.n_layer} x {ref_cfg.n_embd} reference "
           f"({reference.num_params():,} params, val bpb {ref_summary['val_bpb']:.4f}) whose "
           f"training took {ref_flops:.3g} FLOPs more")
    if ctx.master:
        with open(os.path.join(args.out_dir, "ladder.json"), "w") as f:
            json.dump(dict(args=vars(args), layer_importance=importance, layers=layers,
                           reference_flops=ref_flops, reference_bpb=ref_summary["val_bpb"],
                           rows=rows), f, indent=2)
        plot(rows, os.path.join(args.out_dir, "ladder.png"))
    return rows


def table_rows(results, args, pruned_dir):
    """One row per rung: shape, parameters, bytes and FLOPs trained, val bpb over the seeds."""
    rows = []
    for rung, runs in results.items():
        # every seed's model has the same shape and budget: the first stands for all
        model, meta = runs[0][0], data.load_meta(args.data_dir if rung == RUNGS[0] else pruned_dir)
        bpb, spread = mean_spread([s["val_bpb"] for _, s in runs])
        tokens, cfg = runs[0][1]["tokens"], model.config
        # tokens back to bytes of text, in the tokenizer this rung trained with
        n_bytes = round(tokens * meta["train"]["bytes"] / meta["train"]["tokens"])
        rows.append(dict(rung=rung, vocab=cfg.vocab_size, shape=f"{cfg.n_layer} x {cfg.n_embd}",
                         params=model.num_params(), bytes=n_bytes,
                         flops=model.flops_per_token(args.seq_len) * tokens, bpb=bpb,
                         spread=spread, seeds=[s["val_bpb"] for _, s in runs]))
    return rows


def print_table(rows, n_seeds):
    print0(f"\n| rung | vocab | layers x width | params | train bytes | "
           f"val bpb (mean ± half range, {n_seeds} seeds) | FLOPs |")
    print0("|---|---|---|---|---|---|---|")
    for r in rows:
        print0(f"| {r['rung']} | {r['vocab']:,} | {r['shape']} | {r['params']:,} | {r['bytes']:,} "
               f"| {r['bpb']:.4f} ± {r['spread']:.4f} | {r['flops']:.3g} |")


def plot(rows, path):
    """Val bpb per rung with the spread over seeds as error bars; matplotlib is optional."""
    if (figure := new_figure((6, 3.5))) is None:
        return
    fig, ax = figure
    bpb, spread = [r["bpb"] for r in rows], [r["spread"] for r in rows]
    ax.errorbar(range(len(rows)), bpb, yerr=spread, marker="o", capsize=4)
    ax.set_xticks(range(len(rows)), [r["rung"] for r in rows])
    ax.set(ylabel="val bits per byte", title="PanGu-pi Pro ladder, equal training bytes")
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = parser.add_argument_group("ladder")
    g.add_argument("--vocab_size", type=int, default=8192,
                   help="ids of the pruned tokenizer (rungs 2-5)")
    g.add_argument("--wide", default="pangu-cpu-wide",
                   help="preset of the wide-shallow shape (rungs 1-2), also the reference's width")
    g.add_argument("--deep", default="pangu-cpu-deep",
                   help="preset of the deep-narrow shape (rungs 3-5)")
    g.add_argument("--reference_layers", type=int, default=14,
                   help="depth of the reference that rungs 4-5 inherit from")
    g.add_argument("--train_bytes", type=int, default=600_000,
                   help="training text per rung (and for the reference), in bytes")
    g.add_argument("--eval_bytes", type=int, default=100_000,
                   help="validation text per evaluation, in bytes (the same text for all)")
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                   help="one run of every rung per seed")
    g.add_argument("--score_batches", type=int, default=4,
                   help="batches for layer importance (the end of val.bin) and for the masks "
                        "(train.bin)")
    g.add_argument("--mask_steps", type=int, default=200, help="steps of the learned width masks")
    add_train_args(parser)
    parser.set_defaults(out_dir="out_ladder", seq_len=128, batch_tokens=4096, micro_batch=16,
                        eval_every=100, ckpt_every=100, lr=3e-3, data_dir="data/stdlib-gpt2")
    args = parser.parse_args()
    # the rungs fix their own shapes and budgets: a flag that would set them is refused, not ignored
    refuse(given_flags(parser, {"preset", "init_from", "block_size", "max_tokens", "max_steps",
                                *SHAPE_FLAGS}),
           "to the ladder: the shapes are --wide and --deep, the budget --train_bytes")
    ctx = setup(args)
    print0(json.dumps(vars(args)))  # the flags as parsed, so the log says how the run was made
    check_args(args, ctx)
    problems = [f"--{flag} must be positive"
                for flag in ("train_bytes", "eval_bytes", "score_batches", "mask_steps")
                if getattr(args, flag) <= 0]
    try:  # every shape problem now, before any pruning or training
        wide, deep = GPTConfig.from_preset(args.wide), GPTConfig.from_preset(args.deep)
        reference_config(wide, deep, args.reference_layers)
        if args.reference_layers < deep.n_layer:
            problems.append(f"--reference_layers {args.reference_layers} is shallower than "
                            f"--deep {args.deep}")
    except (ValueError, UsageError) as e:
        problems.append(str(e))
    if problems:
        raise UsageError("; ".join(problems))
    data.load_meta(args.data_dir)  # a missing data folder fails here, in one line
    ladder(args, ctx)


if __name__ == "__main__":
    cli(main)
