"""
Inheritune (Sanyal et al. 2024, arXiv 2404.08634) and PanGu-pi-Pro-style parameter inheritance (Tang
et al. 2024, arXiv 2402.02791): start a small model from some layers (and optionally the most
important heads and channels) of a bigger reference model, then train it.

  python data.py && python inheritune.py  # an 8-layer reference, then the v2 search (2 CPU cores)
  python inheritune.py --init_from out_inheritune/reference/ckpt.pt --mode v1 --inherit_layers 4 \
      --out_dir out_v1
  python data.py --tokenizer gpt2 --out_data_dir data/stdlib-gpt2  # then a local HF GPT-2/Llama:
  python inheritune.py --init_from path/to/hf-gpt2 --data_dir data/stdlib-gpt2
  python inheritune.py --preset tiny --layers ends --keep_heads 2 --keep_ffn 384 \
      --width_score taylor  # PanGu-pi Pro's heuristic layers, Taylor scores
  python inheritune.py --preset tiny --layers importance --keep_heads 2 --keep_ffn 384 \
      --width_score learned  # PanGu-pi Pro, data-driven: measured layers, learned masks
  torchrun --nproc_per_node=2 inheritune.py --resume

v2 (the default; the paper's full-data setting, GPT-2 on OpenWebText): given a k-layer reference and
its val loss after T tokens, inherit n = k/2 layers, train T tokens (fresh optimizer, full schedule)
and evaluate; while worse than the reference, n += 2 and inherit again from the reference; stop at a
match or at n = k. Then a random-init model of the final shape is trained the same way (and for 2T
with --compare). v1 (the paper's low-data recipe): inherit --inherit_layers layers, train --epochs
epochs over the first --subset_tokens tokens of train.bin (the paper: 13 of OpenLLaMA-3B's 26 layers,
8 epochs over 1B tokens).

Inherited: the chosen blocks (with their norms), the token embedding, learned positions (GPT-2),
final norm and head, ties kept. The official code leaves the embedding (v1), positions and final
norm (v1 and v2) behind; this does not. Each trial trains in its own subfolder of --out_dir, so
--resume continues in the right one and finished ones return at once.
"""
import argparse
import dataclasses
import functools
import json
import math
import os

import torch
import torch.distributed as dist
import torch.nn as nn

import data
from model import GPT
from train import (HelpFormatter, UsageError, add_train_args, alias, build_model, check_args, cli,
                   evaluate, given, model_from_checkpoint, print0, set_help, setup,
                   shape_flags_given, token_loss, tokenizer_problem, train, plot_curves, val_curve,
                   whole)

LAYER_CHOICES = ("first", "last", "even", "ends", "importance")


# --- depth: which reference blocks to keep ------------------------------------------------------
def choose_layers(n_ref, n, how="first", importance=None):
    """Indices of the n reference layers (of n_ref) to inherit, in order.
      first      : 0..n-1 (Inheritune's step 1, the default)
      last       : the top n (the paper's 'lazy layers' ablation; behaves like random init)
      even       : evenly spaced from the first to the last layer
      ends       : the first ceil(n/2) and the last floor(n/2), dropping the middle (PanGu-pi Pro:
                   layers near both ends matter most)
      importance : the n layers with the largest importance[i] (block_importance)"""
    # any choice is sound: no layer depends on its index (model.py refuses GPT-2's
    # scale_attn_by_inverse_layer_idx, under which only a prefix would keep each layer's scaling)
    if how == "first":
        return list(range(n))
    if how == "last":
        return list(range(n_ref - n, n_ref))
    if how == "even":  # i*(n_ref-1)/(n-1) rounded: a step >= 1 keeps the indices distinct
        return [(i * (n_ref - 1) + (n - 1) // 2) // (n - 1) for i in range(n)] if n > 1 else [0]
    if how == "ends":
        n_front = (n + 1) // 2
        return list(range(n_front)) + list(range(n_ref - (n - n_front), n_ref))
    if how == "importance":
        if importance is None or len(importance) != n_ref:
            raise ValueError(f"--layers importance needs one score per reference layer ({n_ref})")
        return sorted(torch.tensor(importance, dtype=torch.float64).topk(n).indices.tolist())
    raise ValueError(f"unknown layer choice {how!r}: choose {', '.join(LAYER_CHOICES)} or a list "
                     "like 0,1,7")


@torch.no_grad()
def block_importance(model, batches, loss_fn=token_loss):
    """PanGu-pi Pro's layer-skipping criterion (Tang et al. 2024, sec. 3.3): for each block i, the
    rise of the mean loss over `batches` when block i is skipped, L(all but block i) - L(all)."""
    def mean_loss():
        return sum(loss_fn(model, b).item() for b in batches) / len(batches)

    blocks, was_training = model.blocks, model.training
    model.eval()
    try:
        full = mean_loss()
        rises = []
        for i in range(len(blocks)):
            # skipping a pre-norm block is dropping it: the residual stream passes unchanged, so a
            # block that adds nothing scores exactly 0
            model.blocks = nn.ModuleList(b for j, b in enumerate(blocks) if j != i)
            rises.append(mean_loss() - full)
    finally:  # the model leaves with all its blocks, whatever happened
        model.blocks = blocks
        model.train(was_training)
    return rises


def layer_problem(layers, n_ref):
    """Why a layer list cannot be inherited from an n_ref-layer model, or None."""
    if not layers:
        return "no layers chosen"
    if len(set(layers)) != len(layers):
        return f"layers {layers} repeat an index"
    if min(layers) < 0 or max(layers) >= n_ref:
        return f"layers {layers} fall outside 0..{n_ref - 1} (the reference has {n_ref} layers)"
    return None


def inherit_layers(reference, layers):
    """Inheritune step 1: a new model whose block i is a copy of reference block layers[i], with
    the reference's token embedding, learned positions, final norm and head (tied stays tied)."""
    # only n_layer changes in the config, so the result rebuilds from model_args()
    student = GPT(dataclasses.replace(reference.config, n_layer=len(layers)))
    source = {f"blocks.{new}.": f"blocks.{old}." for new, old in enumerate(layers)}
    ref_state, state = reference.state_dict(), {}
    for name in student.state_dict():
        prefix = ".".join(name.split(".")[:2]) + "."
        state[name] = ref_state[source[prefix] + name[len(prefix):] if prefix in source else name]
    student.load_state_dict(state)
    return student.to(next(reference.parameters()).device)


# --- width: heads, FFN channels and hidden channels (PanGu-pi Pro) ------------------------------
def width_slices(cfg, name):
    """For parameter `name`, the (dim, group, index) triples saying which group each position along
    dim belongs to: 'hidden' (residual channels), 'heads.i' (a kv head with the n_head/n_kv_head
    query heads that share it) and 'ffn.i' (FFN channels of layer i)."""
    # the residual stream ties every layer, the embeddings and the norms to one hidden selection;
    # heads go as whole GQA groups, since a kv head serves all of its query heads
    C, H, K, D = cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_dim
    hidden, ffn = torch.arange(C), torch.arange(cfg.ffn_hidden)
    q_group = (torch.arange(H) // (H // K)).repeat_interleave(D)  # of a query row / proj column
    qkv_group = torch.cat([q_group, torch.arange(K).repeat_interleave(D).repeat(2)])  # [Q; K; V]
    parts = name.split(".")
    layer, kind = (parts[1], ".".join(parts[2:])) if parts[0] == "blocks" else (None, name)
    heads, mlp = (f"heads.{layer}", f"ffn.{layer}")
    if kind.split(".")[0] in ("wte", "wpe", "lm_head"):
        return [(1, "hidden", hidden)]
    residual_biases = ("attn.proj.bias", "mlp.proj.bias")
    if kind.split(".")[0] in ("ln_f", "ln_1", "ln_2") or kind in residual_biases:
        return [(0, "hidden", hidden)]
    return {"attn.qkv.weight": [(0, heads, qkv_group), (1, "hidden", hidden)],
            "attn.qkv.bias": [(0, heads, qkv_group)],
            "attn.proj.weight": [(0, "hidden", hidden), (1, heads, q_group)],
            "mlp.fc.weight": [(0, mlp, ffn), (1, "hidden", hidden)],
            "mlp.gate.weight": [(0, mlp, ffn), (1, "hidden", hidden)],
            "mlp.fc.bias": [(0, mlp, ffn)],
            "mlp.proj.weight": [(0, "hidden", hidden), (1, mlp, ffn)]}[kind]


def group_sums(model, per_weight):
    """Sum a per-weight quantity {parameter name: tensor} into one score per head group and
    channel."""
    scores = {}
    for name, value in per_weight.items():
        value = value.float()
        for dim, group, index in width_slices(model.config, name):
            along = value  # the sum over every dimension but dim
            if value.dim() > 1:
                along = value.transpose(0, dim).reshape(value.shape[dim], -1).sum(1)
            total = scores.setdefault(group, torch.zeros(int(index.max()) + 1))
            total.index_add_(0, index, along.cpu())
    return scores


def weight_norm_scores(model):
    """Importance of a group = the L2 norm of every weight that belongs to it (the 'L2' criterion
    of PanGu-pi Pro's comparison of criteria)."""
    scores = group_sums(model, {n: p.detach() ** 2 for n, p in model.named_parameters()})
    return {group: s.sqrt() for group, s in scores.items()}


def taylor_scores(model, batches, loss_fn=token_loss):
    """First-order Taylor importance (Molchanov et al. 2019; PanGu-pi Pro's 'Taylor' criterion):
    |sum over the group's weights of w * dL/dw|, with the gradient of the mean loss over
    `batches`."""
    # w * dL/dw summed over a group is the linearised loss change when the group is zeroed
    model.zero_grad(set_to_none=True)
    for batch in batches:
        (loss_fn(model, batch) / len(batches)).backward()
    scores = group_sums(model, {n: p.detach() * p.grad for n, p in model.named_parameters()})
    model.zero_grad(set_to_none=True)
    return {group: s.abs() for group, s in scores.items()}


def hard_concrete(log_alpha, noise, beta=2 / 3, low=-0.1, high=1.1):
    """The hard-concrete gate (Louizos et al. 2018, sec. 4), the relaxation of the learned masks:
    z = clamp(sigmoid((log u - log(1-u) + log_alpha) / beta) * (high - low) + low, 0, 1), u = noise
    ~ U(0,1). Returns (z, P(z > 0) = sigmoid(log_alpha - beta log(-low/high)))."""
    # stretching past [0, 1] and clamping makes z exactly 0 or 1 with positive probability, while
    # it stays differentiable in between
    z = torch.sigmoid((noise.log() - (1 - noise).log() + log_alpha) / beta) * (high - low) + low
    return z.clamp(0, 1), torch.sigmoid(log_alpha - beta * math.log(-low / high))


def learned_mask_scores(model, batches, n_head, ffn_hidden, steps=200, lr=0.05, penalty=10.0,
                        seed=0, loss_fn=token_loss):
    """PanGu-pi Pro's learnable criterion (Tang et al. 2024, sec. 3.3) as hard-concrete masks: with
    the model frozen, learn one gate logit per kv group and per FFN channel in each layer, and one
    per hidden channel, on
        LM loss + penalty * sum over masks of ((expected open gates - target) / size)^2,
    targets n_head query heads, ffn_hidden channels and n_head * head_dim hidden channels, as
    reduce_width keeps. Returns {group: logit}, the scores reduce_width takes the top-k of; a
    family already at its full size is not learned (scores of 1)."""
    # the hidden mask zeroes channels, but the norms still average over all of them: a relaxation
    # of removing them
    cfg = model.config
    per_group, device = cfg.n_head // cfg.n_kv_head, next(model.parameters()).device
    sizes = {"hidden": (cfg.n_embd, n_head * cfg.head_dim), "ffn": (cfg.ffn_hidden, ffn_hidden),
             "heads": (cfg.n_kv_head, n_head // per_group)}
    groups = ["hidden"] + [f"{kind}.{i}" for i in range(cfg.n_layer) for kind in ("heads", "ffn")]
    family = {g: sizes[g.split(".")[0]] for g in groups}  # group -> (full size, target)
    # log_alpha = 0: every gate starts open with probability 0.83, closed with 0.17
    logits = {g: torch.zeros(full, device=device, requires_grad=True)
              for g, (full, target) in family.items() if target < full}
    if not logits:  # every target is the full size: nothing to choose
        return {g: torch.ones(family[g][0]) for g in groups}
    gates = {}  # this step's sampled gates, read by the hooks
    hooks = _mask_hooks(model, logits, gates, per_group * cfg.head_dim)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    was_training, generator = model.training, torch.Generator().manual_seed(seed)
    model.eval()
    try:
        optimizer = torch.optim.Adam(logits.values(), lr=lr)
        for step in range(steps):
            size_loss = 0.0
            for g, log_alpha in logits.items():
                # drawn on the CPU generator: the same gates on any device
                noise = torch.rand(log_alpha.shape, generator=generator)
                noise = noise.clamp(1e-6, 1 - 1e-6).to(device)
                gates[g], kept = hard_concrete(log_alpha, noise)
                full, target = family[g]
                size_loss = size_loss + ((kept.sum() - target) / full) ** 2
            loss = loss_fn(model, batches[step % len(batches)]) + penalty * size_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for h in hooks:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return {g: logits[g].detach().cpu() if g in logits else torch.ones(family[g][0])
            for g in groups}


def _mask_hooks(model, logits, gates, head_width):
    """Forward hooks that multiply by this step's gates: each block's heads and FFN channels where
    they enter the output projections, and the hidden channels at every writer to the residual
    stream. Returns the hook handles."""
    def scale_input(group, repeat):
        return lambda module, args: (args[0] * gates[group].repeat_interleave(repeat),)

    def scale_output(module, args, out):
        return out * gates["hidden"]

    hooks = []
    for i, block in enumerate(model.blocks):  # a kv group's heads enter proj as head_width columns
        if f"heads.{i}" in logits:
            gate = scale_input(f"heads.{i}", head_width)
            hooks.append(block.attn.proj.register_forward_pre_hook(gate))
        if f"ffn.{i}" in logits:
            hooks.append(block.mlp.proj.register_forward_pre_hook(scale_input(f"ffn.{i}", 1)))
    if "hidden" in logits:  # the norms too: a LayerNorm's bias would leak into a closed channel
        writers = [model.wte, model.wpe, model.ln_f]
        writers += [m for b in model.blocks for m in (b.ln_1, b.ln_2, b.attn.proj, b.mlp.proj)]
        hooks += [m.register_forward_hook(scale_output) for m in writers if m is not None]
    return hooks


def reduce_width(model, n_head, ffn_hidden, scores):
    """A narrower copy keeping the top-scoring n_head query heads (as whole kv groups), ffn_hidden
    FFN channels per layer, and n_head*head_dim hidden channels, kept in their original order.
    Returns (model, {group: kept indices})."""
    # one hidden selection for all layers: this model ties attention width to n_embd, as
    # PanGu-pi-1B Pro's 1792 = 14 x 128 does
    cfg = model.config
    per_group = cfg.n_head // cfg.n_kv_head
    new_cfg = dataclasses.replace(cfg, n_head=n_head, n_kv_head=n_head // per_group,
                                  n_embd=n_head * cfg.head_dim, ffn_hidden=ffn_hidden)
    size = {"hidden": new_cfg.n_embd, "heads": new_cfg.n_kv_head, "ffn": ffn_hidden}
    keep = {group: s.topk(size[group.split(".")[0]]).indices.sort().values
            for group, s in scores.items()}
    state = {}
    for name, t in model.state_dict().items():
        for dim, group, index in width_slices(cfg, name):
            kept = torch.isin(index, keep[group]).nonzero().squeeze(1)
            t = t.index_select(dim, kept.to(t.device))
        state[name] = t
    narrow = GPT(new_cfg)
    narrow.load_state_dict(state)
    return narrow.to(next(model.parameters()).device), keep


# --- Inheritune v2: grow the inherited depth until the reference's loss is matched --------------
def inheritune_v2(reference, reference_loss, train_and_evaluate, start=None, step=2, how="first",
                  shrink=None, importance=None):
    """Inheritune v2 (Sanyal et al. 2024, full-data setting): n = start (default k/2); inherit n
    layers, optionally shrink the width, train and evaluate with train_and_evaluate(student, n) ->
    val loss; stop when it is <= reference_loss or n = k, else n += step. importance: per-layer
    scores for how="importance". Returns [(n, val loss), ...]."""
    k = len(reference.blocks)
    n, history = start or max(1, k // 2), []
    while True:
        # always afresh from the reference, never from the previous trial
        student = inherit_layers(reference, choose_layers(k, n, how, importance))
        loss = train_and_evaluate(shrink(student) if shrink else student, n)
        history.append((n, loss))
        if loss <= reference_loss or n >= k:
            return history
        n = min(n + step, k)


# --- the script ---------------------------------------------------------------------------------
def parse_layers(spec):
    """--layers: a choice name, or an explicit comma list of reference layer indices (kept in that
    order)."""
    if spec in LAYER_CHOICES:
        return spec
    try:
        return [int(i) for i in spec.split(",")]
    except ValueError:
        raise UsageError(f"--layers {spec!r}: choose {', '.join(LAYER_CHOICES)} or a comma list of "
                         "layer indices like 0,1,7") from None


def parse_flags():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = parser.add_argument_group("inheritune")
    g.add_argument("--train_reference", action="store_true", help="first train a reference of "
                   "--preset for --max_tokens in <out_dir>/reference (implied when --init_from is "
                   "not given; --resume reuses it)")
    g.add_argument("--mode", choices=["v2", "v1"], default="v2", help="v2: grow the inherited "
                   "depth by --grow until the reference's val loss is matched; v1: inherit "
                   "--inherit_layers layers and train --epochs over --subset_tokens")
    g.add_argument("--inherit_layers", type=int, default=0, help="v1: layers to inherit; v2: "
                   "depth the search starts at (0: half the reference's)")
    g.add_argument("--grow", type=int, default=2,
                   help="v2: layers added after each trial that does not match the reference")
    g.add_argument("--layers", default="first", help=f"which reference layers: "
                   f"{', '.join(LAYER_CHOICES)} (ends = PanGu-pi Pro: keep both ends, drop the "
                   "middle; importance: the layers whose skipping raises the loss on "
                   "--score_batches windows of val.bin most), or v1 only an explicit list like "
                   "0,1,7")
    g.add_argument("--subset_tokens", type=int, default=400_000, help="v1: train on the first N "
                   "tokens of train.bin (data.py shuffles documents, so a random sample, like the "
                   "paper's 0.1%% subset)")
    g.add_argument("--epochs", type=int, default=4,
                   help="v1: epochs over the subset (the paper uses 8)")
    g.add_argument("--keep_heads", type=int, default=0, help="width reduction: query heads to keep "
                   "per layer, whole kv groups (0: all); the hidden size becomes keep_heads x "
                   "head_dim")
    g.add_argument("--keep_ffn", type=int, default=0,
                   help="width reduction: FFN channels to keep per layer (0: all)")
    g.add_argument("--width_score", choices=["norm", "taylor", "learned"], default="norm",
                   help="importance of heads and channels: L2 norm of their weights, first-order "
                   "Taylor |sum w*dL/dw| on --score_batches batches, or hard-concrete masks "
                   "learned on them for --mask_steps steps (the model frozen), driven to the kept "
                   "sizes")
    g.add_argument("--score_batches", type=int, default=4,
                   help="batches of the first train.bin tokens for --width_score taylor and "
                   "learned; for --layers importance, of the last val.bin tokens (away from what "
                   "--eval_tokens scores)")
    g.add_argument("--mask_steps", type=int, default=200,
                   help="--width_score learned: Adam steps on the mask logits")
    g.add_argument("--compare", action="store_true", help="v2: also train the random-init model "
                   "for 2T tokens (the paper's second baseline); v1: also train a random-init "
                   "model of the student's shape on the same subset")
    add_train_args(parser)
    alias(parser, "--init_from", "--reference")
    set_help(parser, init_from="the reference to inherit from: a ckpt.pt of this repository or a "
             "local Hugging Face GPT-2/Llama folder (default: train one, see --train_reference)",
             preset="shape of the reference that --train_reference trains (the shape flags below "
             "override it)")
    # an 8-layer reference (width 128, one head, FFN 512), so the v2 search has depths 4, 6, 8 to
    # try; sized for ~10 minutes on 2 CPU cores, with small batches (more steps per token); a
    # quarter of val.bin per evaluation, since the search compares losses a few hundredths apart
    parser.set_defaults(preset="8L128H", out_dir="out_inheritune", max_tokens=786_432,
                        batch_tokens=4096, eval_every=100, ckpt_every=50, eval_tokens=131072)
    args = parser.parse_args()
    if args.max_steps:  # T in tokens from here on: 2T and the v1 epoch budget are token counts
        args.max_tokens, args.max_steps = args.max_steps * args.batch_tokens, 0
    return args


def check_flags(args):
    """Every problem with this script's flags, in one line, before any data is read."""
    problems = [f"--{flag} must be positive" for flag in ("grow", "score_batches", "subset_tokens",
                                                           "epochs", "mask_steps")
                if getattr(args, flag) <= 0]
    problems += [f"--{flag} must not be negative" for flag in ("inherit_layers", "keep_heads",
                                                               "keep_ffn")
                 if getattr(args, flag) < 0]
    ignored = [f for f in ("--preset", "--block_size") if given(f)] + shape_flags_given()
    if args.init_from and ignored:  # the reference's checkpoint fixes its shape
        hint = " (layers to inherit: --inherit_layers)" if "--n_layer" in ignored else ""
        problems.append(f"--init_from {args.init_from} sets the model's shape: leave out "
                        f"{' and '.join(ignored)}{hint}")
    if args.init_from and args.train_reference:
        problems.append("give --init_from (inherit from it) or --train_reference (train one "
                        "first), not both")
    if args.init_from and not os.path.exists(args.init_from):
        problems.append(f"--init_from {args.init_from}: no such checkpoint file or Hugging Face "
                        "folder")
    elif (args.init_from and os.path.isdir(args.init_from)
          and not os.path.isfile(os.path.join(args.init_from, "config.json"))):
        problems.append(f"--init_from {args.init_from}: a folder must be a Hugging Face "
                        "checkpoint with config.json")
    if problems:
        raise UsageError("; ".join(problems))
    if given("--n_layer"):  # before the rename, --n_layer here meant the layers to inherit
        print0(f"note: --n_layer {args.n_layer} is the depth of the reference trained here; the "
               "layers to inherit are --inherit_layers")


def check_data(args, how):
    """The data files hold enough tokens for the score batches and the v1 subset."""
    train_bin = os.path.join(args.data_dir, "train.bin")
    n_train = data.file_info(train_bin)["n_tokens"]
    window = args.micro_batch * (args.seq_len + 1)  # one score batch
    scored_width = args.width_score != "norm" and (args.keep_heads or args.keep_ffn)
    for flag, path, used in (
            ("--layers importance", os.path.join(args.data_dir, "val.bin"), how == "importance"),
            ("--width_score", train_bin, scored_width)):
        if used and data.file_info(path)["n_tokens"] < args.score_batches * window:
            raise UsageError(f"{flag}: {path} holds fewer than --score_batches x --micro_batch x "
                             f"(--seq_len + 1) = {args.score_batches * window} tokens")
    # one step reads batch_tokens windows of seq_len + 1, so the subset needs one token more than a
    # batch
    if args.mode == "v1" and not args.batch_tokens < args.subset_tokens <= n_train:
        raise UsageError(f"--subset_tokens {args.subset_tokens} must exceed --batch_tokens "
                         f"{args.batch_tokens} (one step reads batch_tokens + 1) and be at most "
                         f"the {n_train} tokens of {train_bin}")


def check_reference(args, reference, how):
    """Every problem that needs the reference's shape, in one line, before any training."""
    cfg, k, problems = reference.config, reference.config.n_layer, []
    name = f"--init_from {args.init_from}" if args.init_from else f"--preset {args.preset}"
    problems += [p for p in [tokenizer_problem(reference, name, args.data_dir)] if p]
    if args.inherit_layers > k:
        problems.append(f"--inherit_layers {args.inherit_layers} exceeds the reference depth {k}")
    if isinstance(how, list):
        if args.mode == "v2":
            problems.append(f"--layers: v2 grows the depth, so it needs a choice "
                            f"({', '.join(LAYER_CHOICES)}), not a list")
        elif args.inherit_layers and args.inherit_layers != len(how):
            problems.append(f"--inherit_layers {args.inherit_layers} disagrees with the "
                            f"{len(how)} layers of --layers {args.layers}")
        elif layer_problem(how, k):
            problems.append(f"--layers {args.layers}: {layer_problem(how, k)}")
    per_group = cfg.n_head // cfg.n_kv_head
    if args.keep_heads and (args.keep_heads > cfg.n_head or args.keep_heads % per_group):
        problems.append(f"--keep_heads {args.keep_heads}: the reference has {cfg.n_head} query "
                        f"heads in groups of {per_group} sharing a kv head; keep a multiple of "
                        f"{per_group} up to {cfg.n_head}")
    if args.keep_ffn > cfg.ffn_hidden:
        problems.append(f"--keep_ffn {args.keep_ffn} exceeds the reference's {cfg.ffn_hidden} FFN "
                        "channels")
    if args.seq_len > cfg.block_size:
        problems.append(f"--seq_len {args.seq_len} exceeds the reference's block_size "
                        f"{cfg.block_size}")
    if problems:
        raise UsageError("; ".join(problems))


def train_run(args, ctx, rows, name, model, **train_kw):
    """Train `model` in OUT_DIR/name, add its row to `rows` and return its final val loss."""
    summary = train(model, args, ctx, out_dir=os.path.join(args.out_dir, name), **train_kw)
    rows.append(dict(run=name, n_layer=model.config.n_layer, n_embd=model.config.n_embd,
                     params=model.num_params(), tokens=summary["tokens"],
                     val_loss=summary["val_loss"], val_bpb=summary["val_bpb"]))
    return summary["val_loss"]


def trained_reference(args, ctx, reference, rows):
    """(the whole reference, its val loss): a given one evaluated, or one trained here."""
    if not args.init_from:
        reference_loss = train_run(args, ctx, rows, "reference", reference)
        return whole(reference, os.path.join(args.out_dir, "reference")), reference_loss
    reference.to(ctx.device)
    ev = evaluate(reference, args, ctx)
    rows.append(dict(run="reference", n_layer=reference.config.n_layer,
                     n_embd=reference.config.n_embd, params=reference.num_params(), tokens=None,
                     val_loss=ev["loss"], val_bpb=ev["bpb"]))
    return reference, ev["loss"]


def score_windows(args, ctx, path, vocab_size, from_end=False):
    """--score_batches batches of --micro_batch windows from the start (or end) of a token file."""
    # the same on every rank, so that all ranks choose the same layers and channels
    tokens = data.read_tokens(path, vocab_size=vocab_size)
    window = args.micro_batch * (args.seq_len + 1)
    start = max(0, len(tokens) - args.score_batches * window) if from_end else 0
    return [torch.from_numpy(tokens[start + i * window:start + (i + 1) * window].astype("int64"))
            .view(args.micro_batch, -1).to(ctx.device) for i in range(args.score_batches)]


def shrink_width(args, score_batches, student):
    """--keep_heads / --keep_ffn: the student narrowed to the kept heads and channels by
    --width_score (unchanged without them)."""
    if not (args.keep_heads or args.keep_ffn):
        return student
    n_head = args.keep_heads or student.config.n_head
    ffn = args.keep_ffn or student.config.ffn_hidden
    if args.width_score == "learned":
        scores = learned_mask_scores(student, score_batches, n_head, ffn, steps=args.mask_steps,
                                     seed=args.seed)
    elif score_batches:
        scores = taylor_scores(student, score_batches)
    else:
        scores = weight_norm_scores(student)
    return reduce_width(student, n_head, ffn, scores)[0]


def train_trial(args, ctx, rows, shapes, how, student, n):
    """One depth of the v2 search: train the student in OUT_DIR/inherit_n<n>[_<how>]."""
    shapes[n] = student.config  # for the random-init baseline of the final shape
    name = f"inherit_n{n}" + ("" if how == "first" else f"_{how}")
    return train_run(args, ctx, rows, name, student)


def run_v2(args, ctx, rows, reference, reference_loss, how, importance, shrink):
    """The v2 search, then random init of the final shape for T (and 2T with --compare) tokens.
    Returns the search's [(n, val loss), ...]."""
    shapes = {}
    trial = functools.partial(train_trial, args, ctx, rows, shapes, how)
    history = inheritune_v2(reference, reference_loss, trial, start=args.inherit_layers or None,
                            step=args.grow, how=how, shrink=shrink, importance=importance)
    final_n = history[-1][0]
    torch.manual_seed(args.seed)  # the same init on every rank
    train_run(args, ctx, rows, f"random_n{final_n}", GPT(shapes[final_n]))
    if args.compare:
        torch.manual_seed(args.seed)
        train_run(args, ctx, rows, f"random_n{final_n}_2T", GPT(shapes[final_n]),
                  max_tokens=2 * args.max_tokens)
    return history


def run_v1(args, ctx, rows, reference, how, importance, shrink):
    """v1: inherit the chosen layers, train --epochs over the first --subset_tokens tokens (and
    random init of the same shape on them with --compare)."""
    k = reference.config.n_layer
    layers = how if isinstance(how, list) else choose_layers(k, args.inherit_layers or k // 2, how,
                                                               importance)
    student = shrink(inherit_layers(reference, layers))
    train_bin = os.path.join(args.data_dir, "train.bin")
    subset = os.path.join(args.out_dir, "subset.bin")
    if ctx.master:  # the subset as a file of its own, so that train() reads it epoch after epoch
        info = data.file_info(train_bin)
        n_bytes = round(info["n_bytes"] * args.subset_tokens / info["n_tokens"])
        os.makedirs(args.out_dir, exist_ok=True)
        data.write_tokens(subset, data.read_tokens(train_bin)[:args.subset_tokens],
                          info["vocab_size"], n_bytes, info["fingerprint"])
    if ctx.world > 1:
        dist.barrier()
    budget = dict(max_tokens=args.subset_tokens * args.epochs, train_bin=subset)
    train_run(args, ctx, rows, f"v1_n{len(layers)}", student, **budget)
    if args.compare:
        torch.manual_seed(args.seed)
        train_run(args, ctx, rows, f"v1_random_n{len(layers)}", GPT(student.config), **budget)


def report(args, ctx, rows, n_ref, history, reference_loss, importance):
    """The table of every run, v2's search path, compare.png (--compare) and results.json."""
    print0(f"\n{'run':<18}{'layers':>7}{'width':>7}{'params':>12}{'tokens':>12}{'val loss':>10}"
           f"{'val bpb':>9}")
    for r in rows:
        print0(f"{r['run']:<18}{r['n_layer']:>7}{r['n_embd']:>7}{r['params']:>12,}"
               f"{r['tokens'] or '-':>12}{r['val_loss']:>10.4f}{r['val_bpb']:>9.4f}")
    if args.mode == "v2":
        final_n, final_loss = history[-1]
        path = " -> ".join(f"n={n} {loss:.4f}" for n, loss in history)
        print0(f"search over depth: {path}; reference ({n_ref} layers) {reference_loss:.4f}: "
               + (f"matched at n={final_n}" if final_loss <= reference_loss
                  else f"not matched, even at n={final_n}"))
    if ctx.master and args.compare:  # val loss against each run's own training FLOPs
        # the reference's FLOPs are not added to the inherited runs
        dirs = {r["run"]: os.path.join(args.out_dir, r["run"]) for r in rows}
        trained = [name for name, d in dirs.items() if os.path.isfile(os.path.join(d, "log.jsonl"))]
        plot_curves({name: val_curve([dirs[name]], [10**12]) for name in trained},
                    os.path.join(args.out_dir, "compare.png"),
                    f"inheritune {args.mode}: inherited vs random init")
    if ctx.master:
        with open(os.path.join(args.out_dir, "results.json"), "w") as f:
            json.dump(dict(args=vars(args), reference_loss=reference_loss,
                           layer_importance=importance, rows=rows), f, indent=2)


def main():
    args = parse_flags()
    ctx = setup(args)
    print0(json.dumps(vars(args)))
    check_args(args, ctx)
    how = parse_layers(args.layers)
    check_flags(args)
    vocab_size = data.load_meta(args.data_dir)["vocab_size"]
    check_data(args, how)
    if args.init_from:
        reference = model_from_checkpoint(args.init_from, "--init_from")
    else:
        reference = build_model(args, vocab_size)
    check_reference(args, reference, how)

    rows = []  # one per model: the table and results.json
    reference, reference_loss = trained_reference(args, ctx, reference, rows)
    reference.eval()
    importance = None
    if how == "importance":  # skip each reference block in turn on held-out text
        held_out = score_windows(args, ctx, os.path.join(args.data_dir, "val.bin"), vocab_size,
                                 from_end=True)
        importance = block_importance(reference, held_out)
        ranking = sorted(range(len(importance)), key=lambda i: -importance[i])
        print0("layer importance (val loss rise when skipped), most important first: "
               + ", ".join(f"{i}: {importance[i]:+.4f}" for i in ranking))
    batches = None  # taylor and learned width scores need data; norm does not
    if args.width_score != "norm" and (args.keep_heads or args.keep_ffn):
        batches = score_windows(args, ctx, os.path.join(args.data_dir, "train.bin"), vocab_size)
    shrink = functools.partial(shrink_width, args, batches)

    history = None
    if args.mode == "v2":
        history = run_v2(args, ctx, rows, reference, reference_loss, how, importance, shrink)
    else:
        run_v1(args, ctx, rows, reference, how, importance, shrink)
    report(args, ctx, rows, reference.config.n_layer, history, reference_loss, importance)


if __name__ == "__main__":
    cli(main)
