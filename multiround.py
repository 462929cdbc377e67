"""
Multiple-round training (Tang et al. 2024, "Rethinking Optimization and Architecture for Tiny
Language Models", arXiv 2402.02791, sec. 3.4; PanGu-pi Pro): after a round of training, score every
training batch with the frozen model, keep a fraction of them drawn with probability softmax(loss)
without replacement, and train the next round on the kept (mostly hard) batches, starting from the
previous round's weights.

  python data.py && python multiround.py  # round 1 + one hard-batch round, tiny model (~10 min CPU)
  python multiround.py --compare  # also the same rounds with uniformly random batches
  python multiround.py --rounds 3 --keep_fraction 0.5 --temperature 1.0
  torchrun --nproc_per_node=2 multiround.py --resume

Round 1 makes one pass over the data set: the first --max_tokens tokens of train.bin, cut into N
batches of --batch_tokens (one optimizer step each, as in the paper: 2M-token batches, N = 75k).
Every later round r scores the same N batches with round r-1's final model, keeps
round(--keep_fraction * N) of them (the paper's N0 = 50%), writes them in shuffled order to
<out_dir>/round<r>/selected.bin (+ selected.json: the batch ids, their losses and probabilities) and
trains one pass over them with a fresh optimizer and learning-rate schedule. Each round has its own
subfolder, so --resume continues in the right one.

Not specified by the paper, chosen here: the kept batches are shuffled (torch.multinomial returns
them in draw order, hardest-first on average); every round scores the whole data set, not the
previous selection; each later round gets a fresh warmup + cosine schedule with peak --round_lr.
"""
import argparse
import json
import os
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist

import data
from train import (HelpFormatter, UsageError, add_train_args, alias, build_model, check_args,
                   check_seq_len, cli, model_from_checkpoint, plot_curves, print0, rank0_decides,
                   setup, train, val_curve)


# --- the method ---------------------------------------------------------------------------------
def hard_batch_probs(losses, temperature=1.0):
    """p_i = exp(l_i / t) / sum_j exp(l_j / t) (sec. 3.4 uses t = 1): the chance that batch i is
    the first one drawn."""
    # float64: the selection index records them, and they can be ~1e-5 each (N = 75k)
    return torch.softmax(torch.as_tensor(losses, dtype=torch.float64) / temperature, dim=0)


def sample_hard_batches(losses, n_keep, temperature=1.0, generator=None):
    """n_keep distinct batch indices drawn sequentially without replacement from
    p = softmax(losses / t) (`torch.multinomial(p, n_keep, replacement=False)`, sec. 3.4), in
    random order. All-equal losses give a uniformly random subset."""
    # batch i is kept with probability P(i in sample), which exceeds p_i and is not proportional
    # to it; only the first draw follows the softmax exactly
    probs = hard_batch_probs(losses, temperature)
    if not 1 <= n_keep <= len(probs):
        raise ValueError(f"n_keep {n_keep} must lie in 1..{len(probs)} (the number of batches)")
    keep = torch.multinomial(probs, n_keep, replacement=False, generator=generator)
    # the draw order puts likely (hard) batches first, which would front-load them in the next
    # round: shuffle. Sorted first, so the order depends only on the kept set and the permutation:
    # two selections drawn from one seed (loss-weighted and uniform in --compare) then also share
    # the order of their common batches
    return keep.sort().values[torch.randperm(n_keep, generator=generator)]


def batch_windows(tokens, index, batch_rows, seq_len):
    """Batch `index` of the sequential cut: tokens[index*B*T : (index+1)*B*T + 1] as B windows of
    T + 1 tokens, as data.BatchStream reads a global batch."""
    # the windows overlap by one token: the target of the last input
    start = index * batch_rows * seq_len
    block = np.asarray(tokens[start:start + batch_rows * seq_len + 1], dtype=np.int64)
    return torch.from_numpy(block).unfold(0, seq_len + 1, seq_len)


@torch.no_grad()
def score_batches(model, tokens, n_batches, batch_rows, seq_len, micro_rows=8, device="cpu",
                  autocast=nullcontext):
    """Mean next-token cross-entropy of each of the first n_batches sequential batches
    (batch_windows) under the frozen model (eval mode, no grad) -> float64 [n_batches]. Under
    torch.distributed every rank returns all the scores."""
    # rank k scores batches k, k + world, ...; the vector is then summed over ranks
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    was_training = model.training
    model.eval()
    scores = torch.zeros(n_batches, dtype=torch.float64, device=device)
    progress = data.Progress("scoring", n_batches, " batches")
    for i in range(rank, n_batches, world):
        progress.update(i)  # rank 0's count stands for all: the ranks score at the same pace
        windows = batch_windows(tokens, i, batch_rows, seq_len).to(device)
        total = torch.zeros((), dtype=torch.float64, device=device)  # no host sync per chunk
        # micro-batches bound the memory; weighting each by its rows keeps it a plain mean
        for chunk in windows.split(micro_rows):
            with autocast():
                total += model(chunk[:, :-1], chunk[:, 1:])[1].double() * len(chunk)
        scores[i] = total / batch_rows
    progress.update(n_batches)
    if world > 1:
        dist.all_reduce(scores)  # each slot was filled by exactly one rank; the others hold 0
    model.train(was_training)
    return scores.cpu()


def write_selection(path, tokens, keep, batch_tokens, scores, probs, info, **about):
    """Write path (token file) = the kept batches tokens[i*BT:(i+1)*BT] in the order of `keep`,
    plus one closing token, and path with .json = the index: source batch ids, their scores and
    probabilities (+ `about`)."""
    keep = [int(i) for i in keep]
    pieces = [np.asarray(tokens[i * batch_tokens:(i + 1) * batch_tokens]) for i in keep]
    # the closing token is the true successor of the last batch: data.BatchStream needs the target
    # of the last window
    end = (keep[-1] + 1) * batch_tokens
    pieces.append(np.asarray(tokens[end:end + 1]))
    selected = np.concatenate(pieces)
    # the file's byte count only feeds bits-per-byte of train files, which nothing reads; estimate
    # it pro rata
    n_bytes = round(info["n_bytes"] * len(selected) / max(1, info["n_tokens"]))
    data.write_tokens(path, selected, info["vocab_size"], n_bytes, info["fingerprint"])
    index = dict(about, batch_tokens=batch_tokens, n_batches=len(probs), n_keep=len(keep),
                 batch_ids=keep,
                 losses=[None if scores is None else round(float(scores[i]), 6) for i in keep],
                 probs=[float(probs[i]) for i in keep],
                 all_losses=None if scores is None else [round(float(s), 6) for s in scores])
    # the index goes last and appears at once (written aside, then renamed): its presence says
    # that the selection is complete
    index_path = os.path.splitext(path)[0] + ".json"
    with open(index_path + ".tmp", "w") as f:
        json.dump(index, f)
    os.replace(index_path + ".tmp", index_path)
    return selected


# --- the script ---------------------------------------------------------------------------------
def check_multiround_args(args, ctx, n_train):
    """Every problem with the flags (shared ones by train.check_args, then the method's) at once,
    in one line, before any work."""
    try:
        check_args(args, ctx)
        problems = []
    except UsageError as e:
        problems = [str(e)]
    if not 0 < args.keep_fraction <= 1:
        problems.append(f"--keep_fraction {args.keep_fraction} must lie in (0, 1]: the fraction of "
                        "batches kept for the next round")
    if args.rounds < 1:
        problems.append(f"--rounds {args.rounds} must be at least 1")
    if args.compare and args.rounds < 2:
        problems.append("--compare needs --rounds 2 or more (round 1 is the same for both)")
    if not args.temperature > 0:
        problems.append(f"--temperature {args.temperature} must be positive")
    if args.round_lr < 0:
        problems.append(f"--round_lr {args.round_lr} must not be negative (0: --lr)")
    if args.batch_tokens + 1 > n_train:
        problems.append(f"--batch_tokens {args.batch_tokens} is larger than train.bin in "
                        f"{args.data_dir} ({n_train:,} tokens; one batch needs batch_tokens + 1)")
    elif (args.max_tokens // args.batch_tokens) * args.batch_tokens + 1 > n_train:
        problems.append(f"--max_tokens {args.max_tokens} (round 1's one pass over the data set) "
                        f"exceeds train.bin in {args.data_dir}: at most "
                        f"{(n_train - 1) // args.batch_tokens * args.batch_tokens:,}")
    if problems:
        raise UsageError("; ".join(problems))


def parse_flags():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = parser.add_argument_group("multiple-round training", "--max_tokens is round 1's budget "
                                  "and so the data set: the first max_tokens tokens of "
                                  "train.bin, scored and resampled in every later round")
    g.add_argument("--rounds", type=int, default=2, help="rounds in all: round 1 on the whole data "
                   "set, then rounds-1 rounds on hard batches (the paper gains from round 2, not "
                   "from round 3)")
    g.add_argument("--keep_fraction", type=float, default=0.5, help="fraction of the N batches "
                   "kept for each later round (the paper's N0 = 50%%)")
    g.add_argument("--temperature", type=float, default=1.0, help="p = softmax(batch loss / "
                   "temperature); the paper uses 1, higher is closer to uniform")
    g.add_argument("--round_lr", type=float, default=0.0, help="peak learning rate of rounds 2.. "
                   "(0: --lr); each later round gets a fresh AdamW and warmup + cosine schedule")
    g.add_argument("--compare", action="store_true", help="also run rounds 2.. from the same "
                   "round-1 model with uniformly random batches (same count, same budget) in "
                   "<out_dir>/uniform_round<r>, print both val losses and plot them (compare.png); "
                   "the uniform draw uses the same random numbers, so the two selections differ "
                   "only where the weights matter")
    add_train_args(parser)
    alias(parser, "--keep_fraction", "--keep")
    # ~7 minutes on 2 CPU cores (tiny preset, ~2.3k tok/s): round 1 = 60 batches of 8,192 tokens,
    # scoring them (forward only), round 2 on 30; one evaluation at the end of each round
    parser.set_defaults(out_dir="out_multiround", batch_tokens=8192, max_tokens=491_520,
                        eval_every=60, ckpt_every=20, eval_tokens=131072)
    args = parser.parse_args()
    if args.max_steps:  # round 1's budget in tokens from here on: it is also the data set's size
        args.max_tokens, args.max_steps = args.max_steps * args.batch_tokens, 0
    return args


def select_round(name, how, previous_ckpt, selected, tokens, info, n_batches, n_keep, r, args, ctx):
    """Score the data set with the previous round's model (how='loss'; 'uniform' skips it), draw
    the kept batches and write them (rank 0) to `selected`."""
    scores = None
    if how == "loss":
        frozen = model_from_checkpoint(previous_ckpt).to(ctx.device)
        t0 = time.perf_counter()
        scores = score_batches(frozen, tokens, n_batches, args.batch_tokens // args.seq_len,
                               args.seq_len, args.micro_batch, ctx.device, ctx.autocast)
        print0(f"{name}: scored {n_batches} batches with {previous_ckpt} in "
               f"{time.perf_counter() - t0:.1f} s: loss {scores.min():.4f}..{scores.max():.4f}, "
               f"mean {scores.mean():.4f}")
    # a uniform draw is the same sampler on equal losses
    losses = scores if scores is not None else torch.zeros(n_batches, dtype=torch.float64)
    # a per-round seed: every rank draws the same batches, and a resumed run draws them again
    draw = torch.Generator().manual_seed(args.seed * 1000 + r)
    keep = sample_hard_batches(losses, n_keep, args.temperature, draw)
    probs = hard_batch_probs(losses, args.temperature)
    if ctx.master:
        os.makedirs(os.path.dirname(selected), exist_ok=True)
        write_selection(selected, tokens, keep, args.batch_tokens, scores, probs, info,
                        selection=how, source=os.path.join(args.data_dir, "train.bin"),
                        scored_by=previous_ckpt if how == "loss" else None,
                        temperature=args.temperature)
    if scores is not None:
        print0(f"{name}: kept {n_keep}/{n_batches} batches, their mean loss "
               f"{scores[keep].mean():.4f} (all: {scores.mean():.4f}); largest/smallest p = "
               f"{(probs.max() / probs.min()).item():.3g}")
    if dist.is_initialized():
        dist.barrier()  # the other ranks wait for rank 0's file


def reuse_selection(index_path, n_batches, n_keep, args):
    """--resume: the selection written before the interruption (same seed, same draw), if it was
    made with these flags."""
    with open(index_path) as f:
        index = json.load(f)
    made = (index["n_batches"], index["n_keep"], index["batch_tokens"])
    if made != (n_batches, n_keep, args.batch_tokens):
        raise UsageError(f"--resume: {index_path} kept {index['n_keep']}/{index['n_batches']} "
                         f"batches of {index['batch_tokens']} tokens, these flags ask for "
                         f"{n_keep}/{n_batches} of {args.batch_tokens}; use that run's flags or "
                         "another --out_dir")


def train_round(args, ctx, rows, name, model, **train_kw):
    """Train `model` in OUT_DIR/name, add its row to `rows`, return its checkpoint's path."""
    summary = train(model, args, ctx, out_dir=os.path.join(args.out_dir, name), **train_kw)
    rows.append(dict(run=name, tokens=summary["tokens"], steps=summary["steps"],
                     val_loss=summary["val_loss"], val_bpb=summary["val_bpb"]))
    return os.path.join(args.out_dir, name, "ckpt.pt")


def main():
    args = parse_flags()
    ctx = setup(args)
    print0(json.dumps(vars(args)))
    meta = data.load_meta(args.data_dir)
    train_bin = os.path.join(args.data_dir, "train.bin")
    info = data.file_info(train_bin)
    check_multiround_args(args, ctx, info["n_tokens"])
    model = build_model(args, meta["vocab_size"])
    check_seq_len(args, model)
    tokens = data.read_tokens(train_bin, vocab_size=meta["vocab_size"],
                              fingerprint=meta.get("fingerprint"))
    n_batches = args.max_tokens // args.batch_tokens
    n_keep = max(1, round(args.keep_fraction * n_batches))

    rows = []  # one per trained round, for the table
    print0(f"data set: the first {n_batches} batches of {args.batch_tokens:,} tokens of "
           f"{train_bin}; later rounds keep {n_keep} of them")
    round1 = train_round(args, ctx, rows, "round1", model, max_tokens=n_batches * args.batch_tokens)
    previous = {"loss": round1, "uniform": round1}  # each chain's latest checkpoint
    for r in range(2, args.rounds + 1):
        for how in ("loss", "uniform") if args.compare else ("loss",):
            name = f"round{r}" if how == "loss" else f"uniform_round{r}"
            selected = os.path.join(args.out_dir, name, "selected.bin")
            index_path = selected[:-4] + ".json"
            # rank 0 decides whether to reuse it, since it may be the one writing the file
            if rank0_decides(args.resume and os.path.exists(index_path), ctx):
                reuse_selection(index_path, n_batches, n_keep, args)
            else:
                select_round(name, how, previous[how], selected, tokens, info, n_batches, n_keep, r,
                             args, ctx)
            model = model_from_checkpoint(previous[how])
            previous[how] = train_round(args, ctx, rows, name, model, train_bin=selected,
                                        max_tokens=n_keep * args.batch_tokens,
                                        lr=args.round_lr or None)

    print_table(rows, args)
    if args.compare and ctx.master:
        plot_rounds(rows, args)


def plot_rounds(rows, args):
    """--compare: val loss against training FLOPs of the loss-weighted rounds and of the uniform
    ones, both going on from the same round 1, as OUT_DIR/compare.png."""
    steps = {row["run"]: row["steps"] for row in rows}
    later = range(2, args.rounds + 1)
    chains = {"loss-weighted batches": ["round1"] + [f"round{r}" for r in later],
              "uniform batches": ["round1"] + [f"uniform_round{r}" for r in later]}
    curves = {label: val_curve([os.path.join(args.out_dir, n) for n in names],
                               [steps[n] for n in names])
              for label, names in chains.items()}
    plot_curves(curves, os.path.join(args.out_dir, "compare.png"),
                f"multiple-round training, {args.rounds} rounds, keep {args.keep_fraction:g}")


def print_table(rows, args):
    """Final val loss after each round; with --compare, the hard-batch and uniform rounds side by
    side and how many kept batches the two selections share (both draw from the same per-round
    seed). Also writes OUT_DIR/results.json."""
    by_name = {row["run"]: row for row in rows}
    compare = ["val bpb"]
    if args.compare:
        compare = ["val loss, uniform", "difference", "batches in common"]
    header = ["round", "train tokens (cumulative)", "val loss, loss-weighted", *compare]
    lines = ["| " + " | ".join(header) + " |", "|---" * (3 + len(compare)) + "|"]
    cumulative = 0
    for r in range(1, args.rounds + 1):
        hard = by_name[f"round{r}"]
        cumulative += hard["tokens"]
        cells = [str(r), f"{cumulative:,}", f"{hard['val_loss']:.4f}"]
        if args.compare and r > 1:
            uniform = by_name[f"uniform_round{r}"]
            indexes = [os.path.join(args.out_dir, name, "selected.json")
                       for name in (f"round{r}", f"uniform_round{r}")]
            ids = [set(json.load(open(path))["batch_ids"]) for path in indexes]
            difference = hard["val_loss"] - uniform["val_loss"]
            cells += [f"{uniform['val_loss']:.4f}", f"{difference:+.4f}",
                      f"{len(ids[0] & ids[1])} of {len(ids[0])}"]
        elif args.compare:  # round 1 is shared by both chains
            cells += [f"{hard['val_loss']:.4f}", "", ""]
        else:
            cells.append(f"{hard['val_bpb']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    print0("\n".join(lines))
    if int(os.environ.get("RANK", 0)) == 0:
        with open(os.path.join(args.out_dir, "results.json"), "w") as f:
            json.dump(dict(rows=rows, args=vars(args)), f, indent=2)


if __name__ == "__main__":
    cli(main)
