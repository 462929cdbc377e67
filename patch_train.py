"""
Patch-level training (Shao et al. 2024, "Patch-Level Training for Large Language Models", arXiv
2407.12665): train first on patches of K tokens (the mean of their embeddings) to predict the next
patch, then on tokens.

  python data.py && python patch_train.py  # tiny model, K=4, lambda=2/3, CPU, built-in corpus
  python patch_train.py --compare  # also two token-level baselines: same tokens, same FLOPs
  torchrun --nproc_per_node=2 patch_train.py --preset small --max_tokens 50_000_000
  python patch_train.py --resume  # continues inside whichever phase was interrupted

Phase 1 reads a fraction lambda of the token budget as rows of K*T tokens = T patches (sec. 3.1), so
a step holds as many tokens as a token-level step but costs about 1/K of it. Phase 2 copies every
weight, builds a new AdamW and restarts warmup + cosine at the same peak LR (sec. 3.2, "reset"), and
reads the remaining 1 - lambda of the budget from where phase 1 stopped, so the phases see disjoint
data. Relative compute is lambda/K + 1 - lambda (0.5 for K=4, lambda=2/3). --max_tokens /
--max_steps budget both phases together. Phases live in OUT_DIR/patch and OUT_DIR/token, baselines
in OUT_DIR/baseline_*.
"""
import argparse
import json
import math
import os

import torch
import torch.nn.functional as F

import data
from train import (HelpFormatter, UsageError, add_train_args, auto, build_model, check_args,
                   check_seq_len, cli, new_figure, plot_curves, print0, save_figure, setup,
                   token_loss, train, val_curve, whole, with_args)


# --- the method: copy these -----------------------------------------------------------------------
def patch_loss(model, idx, patch_size):
    """Next-patch loss (Shao et al. 2024, sec. 3.1, Eq. 2), averaged per token as the official code.

    idx [B, K*T] is cut into T patches of K = patch_size tokens; patch i enters the model as the
    mean of its K token embeddings, at position i, and its output predicts every token of patch i+1:
        loss = -1/((T-1) K) sum_{i<T-1} sum_{k<K} log p(x[(i+1)K + k] | patch_0 .. patch_i)
    With K = 1 this is next-token cross-entropy. Needs model.wte, model.body and model.lm_head."""
    B, n_tokens = idx.shape
    T = n_tokens // patch_size
    if T * patch_size != n_tokens or T < 2:
        raise ValueError(f"rows of {n_tokens} tokens do not make at least 2 whole patches "
                         f"of {patch_size}")
    patches = model.wte(idx).view(B, T, patch_size, -1).mean(dim=2)          # [B, T, C]
    # positions are patch indices: the body sees a sequence of T patches, as if they were T tokens
    hidden = model.body(patches, torch.arange(T, device=idx.device))
    # the last patch has nothing to predict, so it skips the head; float32 softmax as model.forward
    logits = model.lm_head(hidden[:, :-1]).float().flatten(0, 1)
    log_probs = F.log_softmax(logits, dim=-1)
    # row i: the K tokens of patch i+1, all predicted by the ONE softmax of patch i
    next_patch = idx[:, patch_size:].reshape(B * (T - 1), patch_size)
    # one gather for all K targets: its backward writes one [rows, V] gradient; K nll_loss calls
    # would write K, as much memory traffic as token-level training (the cost patches exist to cut)
    return -log_probs.gather(1, next_patch).mean()


def patch_phase_tokens(total_tokens, patch_fraction, batch_tokens):
    """Tokens of each phase in whole optimizer steps: (patch ~ lambda * total, token-level rest)."""
    steps = total_tokens // batch_tokens
    # the switch falls on a step boundary, so lambda is met as closely as whole steps allow
    patch_steps = round(patch_fraction * steps)
    return patch_steps * batch_tokens, (steps - patch_steps) * batch_tokens


def relative_compute(patch_size, patch_fraction):
    """Cost of patch + token training relative to token training on the same tokens (sec. 3.2):
    lambda/K + 1 - lambda."""
    # a patch step holds K times the tokens of a token step at the same cost
    return patch_fraction / patch_size + 1 - patch_fraction


# --- the two phases -------------------------------------------------------------------------------
def token_budget(args):
    """Tokens of the whole run, both phases together: --max_steps, when given, wins."""
    return args.max_steps * args.batch_tokens or args.max_tokens


def patch_loss_fn(patch_size):
    """loss_fn for train(), which reads windows of one token more than the rows of patches use."""
    # patch_loss is looked up when called, not bound here, so a test can wrap it
    return lambda model, batch: patch_loss(model, batch[:, :-1], patch_size)


def patch_micro_batch(args, world):
    """Rows of K*T tokens per forward pass in the patch phase."""
    # a row of K*T tokens costs what a token row of T costs, so keep --micro_batch rows where that
    # divides one step's rows per process; gcd is the largest count that does
    rows_per_rank = args.batch_tokens // (args.patch_size * args.seq_len * world)
    return math.gcd(args.micro_batch, rows_per_rank)


# --transfer NAME: prefixes of the weights that the token phase re-initialises instead of taking
# them from the patch phase (the comments say what it takes)
TRANSFER = {
    "all": (),                                    # the paper: every weight
    "body": ("wte.", "lm_head."),                 # blocks, norms, positions; new embedding and head
    "embeddings": ("wpe.", "blocks.", "ln_f."),   # embedding and head; new blocks
    "none": ("wte.", "lm_head.", "wpe.", "blocks.", "ln_f."),  # control: all from random init
}


def reinitialise(model, prefixes, seed):
    """In place: parameters whose names start with one of prefixes get the values of a fresh GPT of
    the same shape, initialised with seed; a tied head follows its embedding."""
    if not prefixes:
        return
    torch.manual_seed(seed)
    # a whole fresh model: its init is what the same parameters would get in a new run
    fresh = type(model)(model.config).state_dict()
    state = model.state_dict()
    state.update({k: v for k, v in fresh.items() if k.startswith(prefixes)})
    model.load_state_dict(state)


def patch_then_token(model, args, ctx, out_dir):
    """Phase 1 (patch level) into out_dir/patch, then phase 2 (token level) into out_dir/token.
    Returns both summaries, None for a phase with no budget."""
    patch_tokens, token_tokens = patch_phase_tokens(token_budget(args), args.patch_fraction,
                                                    args.batch_tokens)
    # each phase gets its budget in tokens; a --max_steps left in args would override it in train()
    phase_args = with_args(args, max_steps=0)
    K, T = args.patch_size, args.seq_len
    patch = token = None
    position = 0
    # --continue_schedule: one warmup + cosine over both phases instead of a restart at the switch
    total_steps = None
    if args.continue_schedule:
        total_steps = (patch_tokens + token_tokens) // args.batch_tokens
    # with --resume, train() continues each phase's own checkpoint, and returns a finished phase's
    # summary at once after loading its weights, so the token phase starts from them
    if patch_tokens:
        print0(f"== phase 1: patch level, K={K}, {patch_tokens:,} tokens in rows of {K}x{T} tokens"
               f" = {T} patches")
        patch = train(model, phase_args, ctx, out_dir=os.path.join(out_dir, "patch"),
                      loss_fn=patch_loss_fn(K), seq_len=K * T,
                      micro_batch=patch_micro_batch(args, ctx.world), max_tokens=patch_tokens,
                      # the body runs once per K tokens
                      flops_per_token=model.flops_per_token(T) / K,
                      schedule_steps=total_steps, lr=args.patch_lr or None)
        # the token phase reads on from here, so the two phases see disjoint data
        position = patch["data_position"]
    if token_tokens:
        # an ablation, not the method: which part of the patch model helps or hurts
        if args.transfer != "all":
            # with --fsdp the trained weights are only whole in the checkpoint
            model = whole(model, os.path.join(out_dir, "patch"))
            reinitialise(model, TRANSFER[args.transfer], args.seed + 999)  # unlike phase 1's init
            fresh = ", ".join(p.rstrip(".") for p in TRANSFER[args.transfer])
            print0(f"--transfer {args.transfer}: the token phase starts with fresh {fresh}")
        print0(f"== phase 2: token level, {token_tokens:,} tokens from token {position:,} on "
               "(data phase 1 did not read), new optimizer, "
               + ("the schedule continued" if total_steps else "warmup + cosine restarted"))
        warmup = args.warmup_steps if args.token_warmup_steps is None else args.token_warmup_steps
        # train() builds a new AdamW and schedule: the paper's "reset" at the switch (sec. 3.2)
        token = train(model, with_args(phase_args, warmup_steps=warmup), ctx,
                      out_dir=os.path.join(out_dir, "token"), loss_fn=token_loss,
                      lr=args.token_lr or None,
                      max_tokens=token_tokens, data_position=position, schedule_steps=total_steps,
                      schedule_offset=patch_tokens // args.batch_tokens if total_steps else 0)
    return patch, token


def report(patch, token, args, flops_per_token):
    """One dict for the whole run: final (token-level) val loss, tokens, FLOPs, wall time, and each
    phase's speed."""
    phases = [p for p in (patch, token) if p]
    last = token or patch
    tokens, flops = sum(p["tokens"] for p in phases), sum(p["flops"] for p in phases)
    patch_share = patch["tokens"] / tokens if patch else 0  # as trained, in whole steps
    # relative compute twice: from the FLOP counter, and the paper's formula as a cross-check
    out = dict(val_loss=last["val_loss"], val_bpb=last["val_bpb"], tokens=tokens, flops=flops,
               wall_s=sum(p["wall_s"] for p in phases),
               relative_compute=flops / (tokens * flops_per_token),
               relative_compute_formula=relative_compute(args.patch_size, patch_share))
    for name, p in (("patch", patch), ("token", token)):
        if p:
            out.update({f"{name}_{k}": p[k] for k in ("tokens", "flops", "wall_s", "tok_per_s")})
    if patch and token:  # ideally K: a patch step costs what a token step does
        out["throughput_ratio"] = patch["tok_per_s"] / token["tok_per_s"]
    return out


def print_report(r, patch_size):
    for name in ("patch", "token"):
        if f"{name}_tokens" in r:
            print0(f"{name} phase: {r[f'{name}_tokens']:,} tokens, {r[f'{name}_wall_s']:.1f} s, "
                   f"{r[f'{name}_tok_per_s']:,.0f} tok/s")
    if "throughput_ratio" in r:
        print0(f"patch/token throughput: {r['throughput_ratio']:.2f}x (ideal: K = {patch_size})")
    print0(f"relative compute (FLOP counter): {r['relative_compute']:.3f} of token-level training "
           f"on the same tokens (lambda/K + 1 - lambda = {r['relative_compute_formula']:.3f})")
    print0(f"final token-level val loss {r['val_loss']:.4f}, val bpb {r['val_bpb']:.4f}")


def write_json(path, obj):
    tmp = path + ".tmp"  # write, then rename: a killed run leaves the old file or the new one
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


# --- the comparison -------------------------------------------------------------------------------
BASELINES = [("token, same tokens", "baseline_same_tokens"),  # (name in the table, folder)
             ("token, same FLOPs", "baseline_same_flops")]


def compare(args, ctx, vocab_size, patch_summary, patch_curve, out_dir):
    """Two token-level baselines with the same model, seed and data start: the same tokens, and the
    same FLOPs as patch + token training. Prints one table, writes compare.json and compare.png."""
    flops_per_token = build_model(args, vocab_size).flops_per_token(args.seq_len)
    # same FLOPs: as many token-level tokens as patch + token training's FLOPs buy, in whole steps
    same_flops = round(patch_summary["flops"] / flops_per_token / args.batch_tokens)
    same_flops *= args.batch_tokens
    runs = {"patch + token": patch_summary}
    for (name, folder), tokens in zip(BASELINES, (patch_summary["tokens"], same_flops)):
        torch.manual_seed(args.seed)  # the same initial weights as the patch run
        model = build_model(args, vocab_size)
        print0(f"== baseline: {name}, {tokens:,} tokens")
        runs[name] = train(model, with_args(args, max_steps=0), ctx,
                           out_dir=os.path.join(out_dir, folder), max_tokens=tokens)
    if not ctx.master:  # rank 0 alone prints the table and writes the files
        return runs
    print0(compare_table(runs, patch_summary["tokens"] * flops_per_token))
    print0("rel. = FLOPs / FLOPs of token-level training on the same tokens; "
           "wall s = training time, eval excluded")
    write_json(os.path.join(out_dir, "compare.json"), runs)
    # val loss against training FLOPs: at equal FLOPs, the lower curve used the compute better
    curves = {"patch + token": patch_curve}
    for name, folder in BASELINES:
        curves[name] = val_curve([os.path.join(out_dir, folder)], [runs[name]["steps"]])
    plot_curves(curves, os.path.join(out_dir, "compare.png"),
                f"token-level val loss; patch training K={args.patch_size}, "
                f"lambda={args.patch_fraction:.3g}")
    return runs


def compare_table(runs, token_level_flops):
    """One line per run; rel. is its FLOPs over token_level_flops (token training, same tokens)."""
    header = (f"{'run':<20} {'val loss':>9} {'val bpb':>8} {'tokens':>12} {'FLOPs':>10} "
              f"{'rel.':>5} {'wall s':>7}")
    lines = [header, "-" * len(header)]
    for name, r in runs.items():
        lines.append(f"{name:<20} {r['val_loss']:>9.4f} {r['val_bpb']:>8.4f} {r['tokens']:>12,} "
                     f"{r['flops']:>10.3e} {r['flops'] / token_level_flops:>5.2f} "
                     f"{r['wall_s']:>7.1f}")
    return "\n".join(lines)


# --- the script -----------------------------------------------------------------------------------
def check_patch_args(args, ctx, n_train_tokens):
    """Every problem with the flags at once, as one line, before any training."""
    # the patch flags first; then check_args for the shared ones, so one line names them all
    problems = [f"--{f} {getattr(args, f)} must not be negative (0: --lr)"
                for f in ("patch_lr", "token_lr") if getattr(args, f) < 0]
    if args.token_warmup_steps is not None and args.token_warmup_steps < -1:
        problems.append(f"--token_warmup_steps {args.token_warmup_steps} must be -1 (auto) or more")
    if args.patch_size < 1:
        problems.append(f"--patch_size {args.patch_size} must be >= 1 (tokens per patch)")
    if not 0 <= args.patch_fraction <= 1:
        problems.append(f"--patch_fraction {args.patch_fraction} must be in [0, 1] "
                        "(share of the tokens trained at patch level)")
    try:
        check_args(args, ctx)  # the shared flags, as the token phase uses them
    except UsageError as e:
        problems.append(str(e))
    # the checks below divide by these flags: they must be sane first
    if problems:
        raise UsageError("; ".join(problems))
    # a step is whole rows of T patches (K*T tokens) on every process
    K, T, row = args.patch_size, args.seq_len, args.patch_size * args.seq_len * ctx.world
    if args.seq_len < 2:
        problems.append(f"--seq_len {T} must be >= 2: a row of patches needs a next patch to "
                        "predict")
    if args.batch_tokens % row:
        problems.append(f"--batch_tokens {args.batch_tokens} is not a multiple of patch_size x "
                        f"seq_len x world size = {K} x {T} x {ctx.world} = {row} "
                        f"(one row of {T} patches per process)")
    total = token_budget(args)
    patch_tokens, token_tokens = patch_phase_tokens(total, args.patch_fraction, args.batch_tokens)
    for name, share, tokens in (("patch", args.patch_fraction, patch_tokens),
                                ("token", 1 - args.patch_fraction, token_tokens)):
        if share > 0 and tokens == 0:
            problems.append(f"the {name} phase gets {share:.3g} of {total:,} tokens, less than one "
                            f"step of --batch_tokens {args.batch_tokens:,}: raise --max_tokens or "
                            "lower --batch_tokens")
    # the same-FLOPs baseline trains (patch tokens / K + token tokens), rounded to whole steps
    same_flops_steps = round((patch_tokens / K + token_tokens) / args.batch_tokens)
    if args.compare and not problems and patch_tokens and not same_flops_steps:
        problems.append(f"--compare: the same-FLOPs baseline would get less than one step of "
                        f"--batch_tokens {args.batch_tokens:,}: raise --max_tokens")
    if problems:
        raise UsageError("; ".join(problems))
    # +1: a window needs one token past its last input as a target
    if 0 < patch_tokens and token_tokens and total + 1 > n_train_tokens:
        print0(f"warning: the budget of {total:,} tokens exceeds train.bin ({n_train_tokens:,} "
               "tokens): the data wraps around, so the token phase re-reads data the patch phase "
               "saw")


def run_one(args, ctx, vocab_size, out_dir):
    """Patch + token training with args (with --compare, also its two baselines) in out_dir.
    Returns the runs' summaries by name."""
    torch.manual_seed(args.seed)  # compare() re-seeds alike: every run starts from these weights
    model = build_model(args, vocab_size)
    check_seq_len(args, model)
    # token-level training's cost per token: the yardstick of relative compute
    flops_per_token = model.flops_per_token(args.seq_len)
    patch, token = patch_then_token(model, args, ctx, out_dir)
    summary = report(patch, token, args, flops_per_token)
    print_report(summary, args.patch_size)
    if ctx.master:
        write_json(os.path.join(out_dir, "summary.json"), summary)
    if not args.compare:
        return {"patch + token": summary}
    # the val curve of both phases end to end, against FLOPs
    phases = [(os.path.join(out_dir, n), p["steps"])
              for n, p in (("patch", patch), ("token", token)) if p]
    curve = val_curve(*zip(*phases)) if ctx.master else []
    runs = compare(args, ctx, vocab_size, summary, curve, out_dir)
    return {**runs, "params": model.num_params()}


def gaps(runs):
    """Patch + token minus each baseline in final val loss (nats): > 0 means patch training lost."""
    ours = runs["patch + token"]["val_loss"]
    return {"equal FLOPs": ours - runs["token, same FLOPs"]["val_loss"],
            "equal tokens": ours - runs["token, same tokens"]["val_loss"]}


def spread(values):
    """'mean (min..max)' of one number over seeds."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:+.3f}"
    return f"{mean:+.3f} ({min(values):+.3f}..{max(values):+.3f})"


RUN_NAMES = ("patch + token", "token, same tokens", "token, same FLOPs")


def summarise(results, args, ctx, out_dir):
    """results[tokens] = one runs dict per seed. Prints the mean and range over seeds of every val
    loss and of the two gaps, per budget; writes sweep.json, sweep.md and sweep.png."""
    rows = []
    for tokens, per_seed in results.items():
        g = [gaps(r) for r in per_seed]
        params = per_seed[0]["params"]
        rows.append(dict(tokens=tokens, params=params, tokens_per_param=tokens / params,
                         seeds=[args.seed + i for i in range(len(per_seed))],
                         **{name: [r[name]["val_loss"] for r in per_seed] for name in RUN_NAMES},
                         gap_flops=[x["equal FLOPs"] for x in g],
                         gap_tokens=[x["equal tokens"] for x in g]))
    head = ("| tokens | tokens/param | patch + token | token, same FLOPs | token, same tokens "
            "| gap, equal FLOPs | gap, equal tokens |")
    lines = [head, "|---" * 7 + "|"]
    for r in rows:
        # losses are all positive: no "+" sign, unlike the gaps
        losses = [spread(r[n]).replace("+", "")
                  for n in ("patch + token", "token, same FLOPs", "token, same tokens")]
        lines.append(f"| {r['tokens']:,} | {r['tokens_per_param']:.2f} | {' | '.join(losses)} "
                     f"| {spread(r['gap_flops'])} | {spread(r['gap_tokens'])} |")
    table = "\n".join(lines)
    print0(f"\nK={args.patch_size}, lambda={args.patch_fraction:.3g}, preset {args.preset}, "
           f"seeds {rows[0]['seeds']}: final val loss, mean (min..max) over seeds; "
           "gap = patch + token minus the baseline (> 0: patch lost)")
    print0(table)
    if not ctx.master:  # rank 0 alone writes the files
        return rows
    write_json(os.path.join(out_dir, "sweep.json"), dict(rows=rows, args=vars(args)))
    with open(os.path.join(out_dir, "sweep.md"), "w") as f:
        f.write(table + "\n")
    if len(rows) > 1:  # one budget is a point, not a curve
        plot_gaps(rows, os.path.join(out_dir, "sweep.png"), f"patch training K={args.patch_size}, "
                  f"lambda={args.patch_fraction:.3g}, preset {args.preset}")
    return rows


# Shao et al. 2024, Table 4: 370M model, 45/90/180/360B tokens, WikiText-103 PPL scratch vs patch
# (equal tokens), as (tokens per parameter, gap in nats = log of the PPL ratio)
PAPER_TABLE4 = [(45e9 / 370e6, math.log(12.84 / 12.50)), (90e9 / 370e6, math.log(11.80 / 11.71)),
                (180e9 / 370e6, math.log(11.17 / 11.28)), (360e9 / 370e6, math.log(10.68 / 10.94))]


def plot_gaps(rows, path, title):
    """Gap (nats) against tokens per parameter, mean and range over seeds, beside the paper's
    Table 4; matplotlib is optional."""
    if (figure := new_figure()) is None:
        return
    fig, ax = figure
    x = [r["tokens_per_param"] for r in rows]
    for key, label in (("gap_flops", "equal FLOPs"), ("gap_tokens", "equal tokens")):
        mean = [sum(r[key]) / len(r[key]) for r in rows]
        err = [[m - min(r[key]) for m, r in zip(mean, rows)],  # below and above the mean
               [max(r[key]) - m for m, r in zip(mean, rows)]]
        ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=f"here, {label}")
    ax.plot(*zip(*PAPER_TABLE4), "k^--", label="paper Table 4 (370M), equal tokens")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xscale="log", xlabel="training tokens per parameter",
           ylabel="val loss gap, patch minus token (nats)", title=title)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = parser.add_argument_group("patch-level training")
    g.add_argument("--patch_size", type=int, default=4,
                   help="K: tokens per patch in phase 1 (the paper's default 4)")
    g.add_argument("--patch_fraction", type=float, default=2 / 3,
                   help="lambda: share of the token budget trained at patch level "
                        "(paper: 2/3, for half the compute)")
    g.add_argument("--continue_schedule", action="store_true",
                   help="keep one LR schedule running across the switch "
                        "(default: restart warmup + cosine, as the paper)")
    g.add_argument("--transfer", choices=list(TRANSFER), default="all",
                   help="weights the token phase takes from the patch phase: all (the paper), "
                        "body (fresh embedding and head), embeddings (fresh blocks), "
                        "none (a control: the token phase from random init)")
    g.add_argument("--patch_lr", type=float, default=0.0,
                   help="peak LR of the patch phase (0: --lr, as the paper)")
    g.add_argument("--token_lr", type=float, default=0.0,
                   help="peak LR of the token phase (0: --lr, as the paper)")
    g.add_argument("--token_warmup_steps", type=auto(int), default=None,
                   help="warmup steps of the token phase, or auto (5%% of its steps) "
                        "(default: --warmup_steps, which both phases use otherwise)")
    g.add_argument("--compare", action="store_true",
                   help="also train token-level baselines with the same tokens and with the same "
                        "FLOPs; print a table")
    g.add_argument("--seeds", type=int, default=1,
                   help="with --compare: repeat everything for seeds seed, seed+1, ...; "
                        "prints mean and range per row")
    # int(float(x)): budgets may be written as 5e5
    g.add_argument("--sweep", type=lambda v: [int(float(x)) for x in v.split(",")], default=None,
                   metavar="TOKENS,...",
                   help="with --compare: one comparison per token budget (replaces --max_tokens), "
                        "e.g. 5e5,2e6,8e6; writes sweep.md, sweep.json and sweep.png "
                        "(gap against tokens per parameter)")
    # CPU-sized: 96 steps of 8,192 tokens (64 patch + 32 token, so exactly lambda = 2/3) of the
    # tiny model
    add_train_args(parser)
    parser.set_defaults(out_dir="out_patch", max_tokens=786_432, eval_every=16, ckpt_every=16)
    args = parser.parse_args()
    ctx = setup(args)
    # a missing data folder fails here, in one line
    meta = data.load_meta(args.data_dir)
    n_train = data.file_info(os.path.join(args.data_dir, "train.bin"))["n_tokens"]
    if (args.seeds != 1 or args.sweep) and not args.compare:
        raise UsageError("--seeds and --sweep repeat the comparison: add --compare")
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds} must be at least 1")
    budgets = args.sweep or [token_budget(args)]
    for tokens in budgets:  # every budget's flags are checked before the first one trains
        check_patch_args(with_args(args, max_tokens=tokens, max_steps=0), ctx, n_train)
    print0(json.dumps(vars(args)))  # the flags as parsed, so the log says how the run was made
    results = {}
    for tokens in budgets:
        for k in range(args.seeds):
            run_args = with_args(args, seed=args.seed + k, max_tokens=tokens,
                                 max_steps=0 if args.sweep else args.max_steps)
            # one run: out_dir itself, as before; several: a folder per budget and seed
            parts = (([f"tokens{tokens}"] if args.sweep else [])
                     + ([f"seed{args.seed + k}"] if args.seeds > 1 else []))
            out_dir = os.path.join(args.out_dir, *parts)
            runs = run_one(run_args, ctx, meta["vocab_size"], out_dir)
            results.setdefault(tokens, []).append(runs)
    if args.compare and (args.seeds > 1 or args.sweep):
        summarise(results, args, ctx, args.out_dir)


if __name__ == "__main__":
    cli(main)
