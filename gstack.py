"""
Model growth (Du et al. 2024, "Stacking Your Transformers", arXiv 2405.15319): train a small base
model for d tokens, grow it into the target with a growth operator, then train the target on the
data the base did not see.

  python data.py && python gstack.py  # 2-layer base -> G_stack x4 -> 8-layer target, CPU
  python gstack.py --compare  # also the target from scratch with the same FLOPs: speedup
  python gstack.py --operator zero  # or random / learn; --width_factor 2 grows width too (split)
  python gstack.py --init_from out_gstack/base/ckpt.pt --out_dir out_grown  # grow a checkpoint
  python gstack.py --config stacking_6L_24L.json     # the official repo's config keys
  torchrun --nproc_per_node=2 gstack.py --resume  # continues inside whichever phase was interrupted

Pipeline (official repo, g_stack.sh): the base trains at its peak LR without annealing (constant
after warmup); the grown model gets a NEW AdamW over all its parameters (the official mid-run
operators leave new layers out of the optimizer) and a fresh warmup + cosine, reading on from where
the base stopped. Base FLOPs are counted: the target's budget C = --max_tokens x its FLOPs per token
is shared by base, G_learn's fitting and the grown run. Phases live in OUT_DIR/base, OUT_DIR/learn,
OUT_DIR/grown (and OUT_DIR/scratch with --compare).
"""
import argparse
import json
import math
import os
import re
from dataclasses import asdict, replace

import torch
import torch.nn as nn

import data
from model import GPT, GPTConfig
from train import (HelpFormatter, UsageError, add_train_args, alias, check_args, cli, evaluate,
                   fresh_model, load_checkpoint, model_config, model_from_checkpoint, plot_curves,
                   print0, save_checkpoint, set_help, setup, tokenizer_problem, train, val_curve,
                   whole, with_args)

# 8 layers, 256 wide: a 2-layer base at g = 4
DEFAULT_TARGET, DEFAULT_TARGET_SHAPE = "tiny", dict(n_layer=8)


# --- the method: copy these ---------------------------------------------------------------------
# Torch and the standard library only. Assumed of a model: type(model)(config) builds a fresh one
# from a dataclass config (n_layer, n_embd, n_head, n_kv_head, head_dim, ffn_hidden,
# tie_embeddings), its layers are the ModuleList model.blocks, its first parameter is the token
# embedding. Other codebases' tensor names (nanoGPT: attn.c_attn, attn.c_proj, mlp.c_proj) go in
# as arguments: out_proj, axes, qkv.
OUT_PROJ = ("attn.proj", "mlp.proj")  # a block's output projections: what its branches add to x


def growth_tokens(n_params, flops_budget):
    """Growth timing d (tokens to train the base), Du et al. 2024's guideline (official README):
    log10 d = 0.88 log10 N + 163.27 / log10 C - 5.74, N = target parameters, C = 6 N D FLOPs."""
    return 10 ** (0.88 * math.log10(n_params) + 163.27 / math.log10(flops_budget) - 5.74)


def stacking_list_for(n_src, n_trg, pattern="repeat"):
    """The G_stack layer map, target layer i <- source layer list[i]: 'repeat' stacks the whole
    model (012012, the paper's choice), 'interleave' repeats each layer in place (001122; needs
    n_src | n_trg)."""
    if pattern == "interleave":
        return [i // (n_trg // n_src) for i in range(n_trg)]
    return [i % n_src for i in range(n_trg)]


def _fresh(cfg, seed, like):
    """A newly initialised type(like)(cfg) on like's device and dtype."""
    weight = next(like.parameters())
    # seeded, so every DDP rank grows the same model; fork_rng leaves the caller's RNG as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return type(like)(cfg).to(weight.device, weight.dtype)


def grow_depth(model, stacking_list, operator="stack", seed=0, out_proj=OUT_PROJ):
    """Depth growth G-up (Du et al. 2024, depthwise operators): target layer i is a copy of source
    layer stacking_list[i], norms included; embeddings, final norm and head are copied once.
      stack  : G_stack = G_direct. Not function preserving: the loss jumps at growth.
      zero   : every repeat of a layer gets zero out_proj weights and biases: exactly the
               source's function.
      random : every repeat keeps the fresh init of a model of the target depth."""
    grown = _fresh(replace(model.config, n_layer=len(stacking_list)), seed, model)
    state = grown.state_dict()
    state.update({k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")})
    for i, j in enumerate(stacking_list):
        repeat = j in stacking_list[:i]  # a layer's first occurrence is always a plain copy
        if repeat and operator == "random":
            # the official G_random (MSG, Yao et al. 2024) also fades new layers in with a mask
            continue
        for name, tensor in model.blocks[j].state_dict().items():
            # a pre-norm block adds its branches' outputs to x: with both projections 0 it is x -> x
            zero = repeat and operator == "zero" and name.rsplit(".", 1)[0] in out_proj
            state[f"blocks.{i}.{name}"] = torch.zeros_like(tensor) if zero else tensor
    grown.load_state_dict(state)  # copies into grown's own tensors: no storage shared with model
    return grown


# What each dimension of a tensor is, by the tensor's name in a block or in the model: the unit
# map it grows by ("_in" on a fan-in dimension), or None where it keeps its size. Maps: res =
# residual channels, heads = attention heads' channels, qkv = fused [Q; K; V] rows, ffn and gate =
# MLP channels, norm = a norm's channels. model.py's names; another codebase passes its own table.
WIDTH_AXES = {
    "wte.weight": (None, "res"), "wpe.weight": (None, "res"), "lm_head.weight": (None, "res_in"),
    "attn.qkv.weight": ("qkv", "res_in"), "attn.qkv.bias": ("qkv",), "attn.proj.bias": ("res",),
    "attn.proj.weight": ("res", "heads_in"), "mlp.gate.weight": ("gate", "res_in"),
    "mlp.fc.weight": ("ffn", "res_in"), "mlp.fc.bias": ("ffn",), "mlp.proj.bias": ("res",),
    "mlp.proj.weight": ("res", "ffn_in"),
    **{f"{ln}.{p}": ("norm",) for ln in ("ln_1", "ln_2", "ln_f") for p in ("weight", "bias")}}


def _unit_map(n_src, n_trg, device):
    """Target unit -> source unit, cycling through the source; and which target units are new."""
    idx = torch.arange(n_trg, device=device)
    return idx % n_src, idx >= n_src


def _rows(head_idx, head_new, head_dim, offset=0):
    """A head map as a row map: head_dim rows per head, from row `offset` of the source tensor."""
    rows = head_idx[:, None] * head_dim + torch.arange(head_dim, device=head_idx.device)
    return offset + rows.flatten(), head_new.repeat_interleave(head_dim)


def _grow_tensor(src, fresh, axes, maps, operator):
    """One tensor of grow_width: gather source units along each grown dimension, then split, zero
    or random. fresh: the same tensor of a newly initialised target."""
    copied, old = src, torch.tensor(True, device=src.device)
    new_output = torch.tensor(False, device=src.device)
    for dim, axis in enumerate(axes):
        if axis is None:
            continue
        idx, new = maps[axis.removesuffix("_in")]
        shape = [-1 if d == dim else 1 for d in range(src.dim())]
        copied = copied.index_select(dim, idx)
        if axis.endswith("_in") and operator == "split":  # a unit's copies share its fan-in
            copied = copied / torch.bincount(idx)[idx].view(shape).to(src.dtype)
        old = old & ~new.view(shape)
        # zero: new units output 0; their fan-in stays random, and so do norms and the SwiGLU gate
        # (a zero gate AND a zero up row is a saddle that never gets gradient; a zero up row alone
        # keeps the unit's output 0)
        if not axis.endswith("_in") and axis not in ("norm", "gate"):
            new_output = new_output | new.view(shape)
    if operator == "split":
        return copied
    out = torch.where(old, copied, fresh)
    return out.masked_fill(new_output, 0) if operator == "zero" else out


def grow_width(model, n_embd, ffn_hidden, operator="split", seed=0, axes=WIDTH_AXES):
    """Width growth G-right (Du et al. 2024, widthwise operators) to residual width n_embd and MLP
    width ffn_hidden. New units copy source units cyclically (unit i <- i mod n_source).
      split  : Net2Net (Chen et al. 2016): copies keep their fan-out, fan-in weights are divided by
               the copy count. Exact for MLP and head growth; for residual growth exact at a whole
               multiple of the width with an untied head (a tied one scales the logits by the
               factor).
      zero   : source weights in place, new units output 0, their fan-in random. Exact for MLP
               growth.
      random : new units freshly initialised (std 0.02), source weights in place."""
    # a whole multiple copies every residual channel equally, so norm means and variances stay;
    # other widths, and zero's new residual channels (zeros join the mean / RMS), change them.
    # Copies get identical updates forever (symmetry); the official code adds no noise either,
    # and its bert2bert code copies cyclically like this or in a random order
    cfg, dev = model.config, next(model.parameters()).device
    group = cfg.n_head // cfg.n_kv_head
    n_head = n_embd // cfg.head_dim  # whole heads of the same head_dim: RoPE, 1/sqrt(d) unchanged
    target = replace(cfg, n_embd=n_embd, n_head=n_head, n_kv_head=n_head // group,
                     ffn_hidden=ffn_hidden)
    grown = _fresh(target, seed, model)
    # heads grow by whole GQA groups (a new KV head with its query heads), in fused [Q; K; V] rows
    kv_idx, kv_new = _unit_map(cfg.n_kv_head, target.n_kv_head, dev)
    q_idx = (kv_idx[:, None] * group + torch.arange(group, device=dev)).flatten()
    q_rows = _rows(q_idx, kv_new.repeat_interleave(group), cfg.head_dim)
    k_rows = _rows(kv_idx, kv_new, cfg.head_dim, cfg.n_embd)
    v_rows = _rows(kv_idx, kv_new, cfg.head_dim, cfg.n_embd + cfg.n_kv_head * cfg.head_dim)
    maps = {"res": _unit_map(cfg.n_embd, n_embd, dev), "heads": q_rows,
            "ffn": _unit_map(cfg.ffn_hidden, ffn_hidden, dev),
            "qkv": tuple(torch.cat(rows) for rows in zip(q_rows, k_rows, v_rows))}
    maps.update(norm=maps["res"], gate=maps["ffn"])
    fresh, state = grown.state_dict(), {}
    for name, tensor in model.state_dict().items():
        key = re.sub(r"^blocks\.\d+\.", "", name)  # a block's tensors share one entry of axes
        state[name] = _grow_tensor(tensor, fresh[name], axes[key], maps, operator)
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["wte.weight"]
    grown.load_state_dict(state)
    return grown


class LearnedDepth(nn.Module):
    """G_learn depth growth (LiGO, Wang et al. 2023, as Du et al. 2024 use it): each tensor of
    target layer i is sum_j w[i, j] * (that tensor of source layer j), one [target, source] matrix
    w per tensor kind, initialised to the stacking map (w[i, stacking_list[i]] = 1: G_stack).
    Only w trains (through train(), like a model); materialise() then builds the target.
    Width maps are not learned here."""

    def __init__(self, source, stacking_list, qkv="attn.qkv"):
        super().__init__()
        self.source = source.requires_grad_(False)
        self.config = replace(source.config, n_layer=len(stacking_list))
        init = torch.zeros(len(stacking_list), source.config.n_layer)
        init[torch.arange(len(stacking_list)), torch.tensor(stacking_list)] = 1.0
        # one matrix per block tensor, three for the fused qkv projection's Q, K and V rows;
        # a ParameterDict's keys cannot contain dots
        names = [name for name, _ in source.blocks[0].named_parameters()]
        self.coef = nn.ParameterDict({n.replace(".", "_"): nn.Parameter(
            init.repeat(3 if n.startswith(qkv + ".") else 1, 1, 1)) for n in names})
        # a weightless skeleton to run the mixed weights through; in a list, hidden from .to()
        with torch.device("meta"):
            self._skeleton = [type(source)(self.config)]

    def grown_params(self):
        """name -> tensor of the target: the source's non-block tensors, each block tensor mixed."""
        cfg = self.source.config
        qkv_rows = [cfg.n_head * cfg.head_dim] + [cfg.n_kv_head * cfg.head_dim] * 2
        params = {n: p for n, p in self.source.named_parameters() if not n.startswith("blocks.")}
        params.update(self.source.named_buffers())
        for name, _ in self.source.blocks[0].named_parameters():
            coef = self.coef[name.replace(".", "_")]  # [parts, target, source]
            layers = torch.stack([block.get_parameter(name) for block in self.source.blocks])
            parts = layers.split(qkv_rows, dim=1) if len(coef) == 3 else [layers]
            mixed = torch.cat([torch.einsum("ts,s...->t...", c, part)
                               for c, part in zip(coef, parts)], dim=1)
            params.update({f"blocks.{i}.{name}": mixed[i] for i in range(len(mixed))})
        return params

    def forward(self, idx, targets=None):  # the target's forward on the mixed weights
        return torch.func.functional_call(self._skeleton[0], self.grown_params(), (idx, targets))

    @torch.no_grad()
    def materialise(self, seed=0):
        grown = _fresh(self.config, seed, self.source)
        state = {k: v.detach() for k, v in self.grown_params().items() if k in grown.state_dict()}
        if self.config.tie_embeddings:
            state["lm_head.weight"] = state["wte.weight"]
        grown.load_state_dict(state)
        return grown

    def num_params(self, embeddings=True):  # what trains (train() prints it)
        return sum(p.numel() for p in self.coef.parameters())

    def model_args(self):  # train() saves it with each checkpoint
        return asdict(self.config)


# --- the script ---------------------------------------------------------------------------------
def flops_to_reach(curve, loss):
    """FLOPs at which a (FLOPs, val loss) curve first reaches `loss`, linearly interpolated; None
    if never."""
    for (f0, v0), (f1, v1) in zip(curve[:1] + curve[:-1], curve):
        if v1 <= loss:
            return f1 if v0 <= loss else f0 + (v0 - loss) / (v0 - v1) * (f1 - f0)
    return None


def read_config(args):
    """--config: the official repo's JSON, onto the flags."""
    # its embd_name / ln_name / ... keys name lit-gpt modules: not needed here
    where = f"--config {args.config}"
    try:
        cfg = json.load(open(args.config))
    except (OSError, ValueError) as e:
        raise UsageError(f"{where} cannot be read as JSON ({e})")
    if not isinstance(cfg, dict):
        raise UsageError(f"{where}: a JSON object is needed (keys src_config_name, "
                         "trg_config_name, src_init_path, stacking_list), "
                         f"not a {type(cfg).__name__}")
    layers = cfg.get("stacking_list", [])
    # a bool is an int in Python: true / false are no layer indices
    if not (isinstance(layers, list)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in layers)):
        raise UsageError(f"{where}: stacking_list must be a list of base layer indices like "
                         f"[0, 1, 0, 1], not {json.dumps(layers)}")
    for key in ("src_config_name", "trg_config_name", "src_init_path"):
        if not isinstance(cfg.get(key, ""), str):
            raise UsageError(f"{where}: {key} must be a string, not {json.dumps(cfg[key])}")
    args.base_preset = cfg.get("src_config_name", args.base_preset)
    args.preset = cfg.get("trg_config_name", args.preset)
    args.init_from = cfg.get("src_init_path", args.init_from)
    if "stacking_list" in cfg:
        args.stacking_list = ",".join(map(str, cfg["stacking_list"]))


def check_flags(args, ctx):
    problems = []
    if args.max_steps:
        problems.append("--max_steps is not used here: gstack.py budgets its phases in tokens "
                        "(--max_tokens)")
    if args.growth_tokens != "auto" and not args.growth_tokens.isdigit():
        problems.append(f"--growth_tokens must be 'auto' or a token count, "
                        f"not {args.growth_tokens!r}")
    if not 0 < args.growth_fraction < 1:
        problems.append(f"--growth_fraction {args.growth_fraction} must be in (0, 1)")
    problems += [f"--{flag} {getattr(args, flag)} must be positive"
                 for flag in ("learn_steps", "learn_lr", "growth_factor")
                 if getattr(args, flag) <= 0]
    if args.init_from and (args.compare or args.operator == "learn"):
        problems.append("--compare and --operator learn need the whole pipeline (they train on "
                        "data), not --init_from")
    try:
        if not args.init_from or args.max_tokens:  # only a run that trains reads data
            check_args(args, ctx)
    except UsageError as e:
        problems.append(str(e))
    if problems:
        raise UsageError("; ".join(problems))


def plan(args, vocab_size, base=None):
    """(base config, target config, stacking list) from the flags (or the checkpoint `base`); one
    UsageError naming every problem."""
    problems, g = [], args.growth_factor

    def preset(flag, name):
        block_size = {"block_size": args.block_size} if args.block_size else {}
        try:
            return GPTConfig.from_preset(name, vocab_size=vocab_size, **block_size)
        except ValueError as e:
            problems.append(f"--{flag}: {e}")

    def target(fields=None):  # --preset (or the default, or the grown base) + the shape flags
        if fields is None and not args.preset:
            fields = {**GPTConfig.preset_fields(DEFAULT_TARGET), **DEFAULT_TARGET_SHAPE}
        try:
            return model_config(args, vocab_size, fields=fields)
        except UsageError as e:
            problems.append(str(e))

    if base is not None:
        src = base.config
        if args.max_tokens:  # it trains on with this data: the data's tokenizer must be its own
            problem = tokenizer_problem(base, f"--init_from {args.init_from}", args.data_dir)
            problems += [problem] if problem else []
        trg = target() if args.preset else target({**asdict(src), "n_layer": src.n_layer * g})
    else:
        trg, w = target(), args.width_factor
        by_factors = trg and not args.base_preset  # the base is the target divided by g and w
        if by_factors and trg.n_layer % g and args.stacking_list in ("repeat", "interleave"):
            problems.append(f"--growth_factor {g} does not divide the target depth {trg.n_layer} "
                            "(use a divisor or --stacking_list)")
        if by_factors and (trg.n_kv_head % w or trg.ffn_hidden % w):
            problems.append(f"--width_factor {w} must divide the target's KV heads "
                            f"({trg.n_kv_head}) and ffn_hidden ({trg.ffn_hidden})")
            w = 1
        if args.base_preset:
            src = preset("base_preset", args.base_preset)
        else:
            src = trg and replace(trg, n_layer=max(1, trg.n_layer // g), n_embd=trg.n_embd // w,
                                  n_head=trg.n_head // w, n_kv_head=trg.n_kv_head // w,
                                  ffn_hidden=trg.ffn_hidden // w)
    if not (src and trg):
        raise UsageError("; ".join(problems))
    if args.seq_len > trg.block_size and (args.max_tokens or not args.init_from):
        problems.append(f"--seq_len {args.seq_len} exceeds the block_size {trg.block_size} "
                        "(raise --block_size)")
    kept = ("flavour", "vocab_size", "block_size", "tie_embeddings")  # no operator changes these
    problems += [f"base and target differ in {f} ({getattr(src, f)} vs {getattr(trg, f)}); "
                 "growth keeps it" for f in kept if getattr(src, f) != getattr(trg, f)]
    if trg.n_embd < src.n_embd or trg.ffn_hidden < src.ffn_hidden:
        problems.append(f"target width {trg.n_embd}/{trg.ffn_hidden} is narrower than the base's "
                        f"{src.n_embd}/{src.ffn_hidden}")
    group = src.n_head // src.n_kv_head
    if trg.head_dim != src.head_dim or trg.n_head // trg.n_kv_head != group:  # grow_width's limit
        problems.append(f"target width {trg.n_embd} ({trg.n_head} heads, {trg.n_kv_head} KV) "
                        f"cannot be tiled by whole heads of the base's head dim {src.head_dim} in "
                        f"GQA groups of {group}: use n_embd a multiple of {src.head_dim * group} "
                        f"with n_head = n_embd / {src.head_dim}")
    if args.stacking_list in ("repeat", "interleave"):
        if args.stacking_list == "interleave" and trg.n_layer % src.n_layer:
            problems.append(f"--stacking_list interleave needs the base depth {src.n_layer} to "
                            f"divide the target depth {trg.n_layer}")
        stacking = stacking_list_for(src.n_layer, trg.n_layer, args.stacking_list)
    else:  # an index list; -1 stands for what is not a number, so that the range check names it
        stacking = [int(i) if re.fullmatch(r"\s*\d+\s*", i) else -1
                    for i in args.stacking_list.split(",")]
        if len(stacking) != trg.n_layer or not all(0 <= i < src.n_layer for i in stacking):
            problems.append(f"--stacking_list {args.stacking_list!r} needs one base layer index in "
                            f"0..{src.n_layer - 1} per target layer ({trg.n_layer} entries)")
    if problems:
        raise UsageError("; ".join(problems))
    return src, trg, stacking


def base_tokens(args, n_params, budget_tokens):
    """d for the base in whole optimizer steps: --growth_tokens, or with auto the timing rule, or
    a fraction of the budget where the rule asks for all of it (it does at CPU scale)."""
    if args.growth_tokens != "auto":
        d = int(args.growth_tokens)
    else:
        budget = 6 * n_params * budget_tokens
        d = growth_tokens(n_params, budget)
        print0(f"growth timing rule: N = {n_params:.3g} parameters, C = 6ND = {budget:.3g} FLOPs "
               f"-> d = {d:.3g} tokens")
        if not (4.1e8 <= n_params <= 3e9 and 1e20 <= budget <= 1e21):  # its IsoFLOP sweeps
            print0("warning: the rule was fitted on 410M-3B parameters and ~1e20-1e21 FLOPs; "
                   "here it is an extrapolation")
        if d >= budget_tokens:
            d = args.growth_fraction * budget_tokens
            print0(f"the rule asks for more than the whole budget ({budget_tokens:,} tokens): the "
                   f"base gets --growth_fraction {args.growth_fraction:g} of it instead, "
                   f"{d:,.0f} tokens")
    return max(1, round(d / args.batch_tokens)) * args.batch_tokens


def grow(args, base, trg, stacking):
    """grow_width (a copy where the widths match), then grow_depth unless the depth operator is
    learn: LearnedDepth takes the widened model."""
    widened = grow_width(base, trg.n_embd, trg.ffn_hidden, args.width_operator, args.seed)
    if args.operator == "learn":
        return widened
    return grow_depth(widened, stacking, args.operator, args.seed)


def grow_checkpoint(args, ctx, base, src, trg, stacking):
    """--init_from: grow a checkpoint, save OUT_DIR/grown.pt (train.py --init_from reads it)
    and, with a token budget, train it (new AdamW, warmup + cosine) on the data after the
    checkpoint's."""
    grown_pt = os.path.join(args.out_dir, "grown.pt")
    grown = grow(args, base, trg, stacking)
    if ctx.master:
        save_checkpoint(grown_pt, {"model_args": grown.model_args(), "model": grown.state_dict(),
                                   "grown_from": args.init_from, "operator": args.operator,
                                   "stacking_list": stacking})
    print0(f"grew {args.init_from} ({src.n_layer}L{src.n_embd}) with {args.operator}, layers "
           f"{stacking} -> {grown_pt} ({trg.n_layer}L{trg.n_embd}, {grown.num_params():,} "
           "parameters)")
    if args.max_tokens:
        # the data position from ckpt.pt itself (its JSON may lag); a Hugging Face folder has none
        position = 0
        if os.path.isfile(args.init_from):
            saved = load_checkpoint(args.init_from, "--init_from")
            position = saved.get("data", {}).get("position", 0)
        print0(f"== grown: {args.max_tokens:,} tokens from token {position:,} on")
        train(grown, args, ctx, out_dir=os.path.join(args.out_dir, "grown"),
              max_tokens=args.max_tokens, data_position=position)


def pipeline(args, ctx, src, trg, stacking):
    """Base (constant LR after warmup) -> growth -> grown model (new AdamW over all parameters,
    warmup + cosine) on the data after the base's, all inside the FLOPs the target would get for
    --max_tokens tokens."""
    torch.manual_seed(args.seed)
    base = fresh_model(src, args)
    with torch.device("meta"):  # for counting only
        target = GPT(trg)
    target_fpt = target.flops_per_token(args.seq_len)
    # the budget is what the target from scratch spends; the base and G_learn take their share
    budget = args.max_tokens // args.batch_tokens * args.batch_tokens * target_fpt
    d = base_tokens(args, target.num_params(), args.max_tokens)
    learn_tokens = args.learn_steps * args.batch_tokens if args.operator == "learn" else 0
    left = budget - d * base.flops_per_token(args.seq_len) - learn_tokens * target_fpt
    grown_tokens = int(left // target_fpt) // args.batch_tokens * args.batch_tokens
    if grown_tokens <= 0:
        raise UsageError(f"the base ({d:,} tokens) and G_learn ({learn_tokens:,}) use the whole "
                         f"budget of --max_tokens {args.max_tokens:,}: lower --growth_tokens or "
                         "--learn_steps, or raise --max_tokens")
    wider = (src.n_embd, src.ffn_hidden) != (trg.n_embd, trg.ffn_hidden)
    width = f" + {args.width_operator} width" if wider else ""
    print0(f"plan: base {src.n_layer}L{src.n_embd} ({base.num_params():,} params), {d:,} tokens "
           f"-> {args.operator}{width}, layers {stacking} -> target {trg.n_layer}L{trg.n_embd} "
           f"({target.num_params():,} params), {grown_tokens:,} tokens")

    runs, base_lr = {}, args.base_lr or args.lr
    # no annealing: the base is a snapshot taken while the LR is still near its peak
    print0(f"== base: {d:,} tokens at a constant LR {base_lr:g} after warmup (not annealed)")
    runs["base"] = train(base, args, ctx, out_dir=os.path.join(args.out_dir, "base"), max_tokens=d,
                         lr=base_lr, schedule="constant")
    position = runs["base"]["data_position"]
    grown = grow(args, whole(base, os.path.join(args.out_dir, "base")), trg, stacking)
    if args.operator == "learn":
        print0(f"== G_learn: {args.learn_steps} steps on the layer coefficients alone (base "
               f"frozen), LR {args.learn_lr:g}")
        learner = LearnedDepth(grown, stacking)
        # decay would pull the layer map to 0; the few coefficients train unsharded (DDP) even
        # under --fsdp
        runs["learn"] = train(learner, with_args(args, weight_decay=0.0, fsdp=False), ctx,
                              out_dir=os.path.join(args.out_dir, "learn"), max_tokens=learn_tokens,
                              data_position=position, lr=args.learn_lr, flops_per_token=target_fpt)
        position, grown = runs["learn"]["data_position"], learner.materialise(args.seed)

    at_growth = evaluate(grown.to(ctx.device), args, ctx)["loss"]
    print0(f"== grown: val loss {runs['base']['val_loss']:.4f} before growth, {at_growth:.4f} "
           f"after; {grown_tokens:,} tokens from token {position:,} on, new AdamW over all "
           f"{grown.num_params():,} parameters, warmup + cosine")
    runs["grown"] = train(grown, args, ctx, out_dir=os.path.join(args.out_dir, "grown"),
                          max_tokens=grown_tokens, data_position=position)
    runs["grown"]["val_loss_at_growth"] = at_growth
    return runs, trg


def compare(args, ctx, runs, trg):
    """The target from scratch with the same total FLOPs (base counted); speedup C_scratch /
    C_grown - 1 where the grown pipeline's val curve first reaches scratch's final loss."""
    print0(f"== scratch: the target for {args.max_tokens:,} tokens (the same FLOPs as base + "
           "growth)")
    torch.manual_seed(args.seed)
    runs["scratch"] = train(fresh_model(trg, args), args, ctx, max_tokens=args.max_tokens,
                            out_dir=os.path.join(args.out_dir, "scratch"))
    if not ctx.master:
        return
    names = [n for n in ("base", "learn", "grown") if n in runs]
    dirs, steps = [os.path.join(args.out_dir, n) for n in names], [runs[n]["steps"] for n in names]
    # one curve over all phases, plus the loss measured right after growth
    curve, n_before = val_curve(dirs, steps), len(val_curve(dirs[:-1], steps[:-1]))
    curve.insert(n_before, (curve[n_before - 1][0], runs["grown"]["val_loss_at_growth"]))
    totals = {k: sum(runs[n][k] for n in names) for k in ("tokens", "flops", "wall_s")}
    runs["grown, all phases"] = {**runs["grown"], **totals}
    lines = [f"{'run':<18} {'tokens':>10} {'FLOPs':>9} {'val loss':>9} {'val bpb':>8} "
             f"{'wall s':>7}"]
    for name in [*names, "grown, all phases", "scratch"]:
        r = runs[name]
        lines.append(f"{name:<18} {r['tokens']:>10,} {r['flops']:>9.3g} {r['val_loss']:>9.4f} "
                     f"{r['val_bpb']:>8.4f} {r['wall_s']:>7.1f}")
    target_loss, scratch_flops = runs["scratch"]["val_loss"], runs["scratch"]["flops"]
    reach = flops_to_reach(curve, target_loss)
    runs["speedup"] = dict(scratch_final_loss=target_loss, grown_flops_to_reach=reach,
                           speedup=reach and scratch_flops / reach - 1)
    if reach is None:
        lines.append(f"grown run never reached scratch's final val loss {target_loss:.4f}: no "
                     "speedup at this budget")
    else:
        lines.append(f"grown run reached scratch's final val loss {target_loss:.4f} at "
                     f"{reach:.3g} FLOPs (scratch: {scratch_flops:.3g}): speedup C_scratch / "
                     f"C_grown - 1 = {scratch_flops / reach - 1:+.1%}")
    print0("\n".join(lines))
    with open(os.path.join(args.out_dir, "compare.json"), "w") as f:
        json.dump(runs, f, indent=2)
    scratch = val_curve([os.path.join(args.out_dir, "scratch")], [runs["scratch"]["steps"]])
    plot_curves({"scratch": scratch, " + ".join(names[:-1]): curve[:n_before],
                 f"grown ({args.operator})": curve[n_before:]},
                os.path.join(args.out_dir, "compare.png"),
                f"growth vs. scratch, {trg.n_layer}L{trg.n_embd} target")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = parser.add_argument_group("model growth", "--preset and the shape flags give the TARGET "
                                  "shape; --init_from is a trained base to grow instead of "
                                  "training one")
    g.add_argument("--operator", choices=["stack", "zero", "random", "learn"], default="stack",
                   help="depth operator: stack (G_stack), zero (new layers are identities), "
                   "random (new layers fresh), learn (LiGO, from the stacking map)")
    g.add_argument("--width_operator", choices=["split", "zero", "random"], default="split",
                   help="width operator when --base_preset is narrower than the target")
    g.add_argument("--growth_factor", type=int, default=4,
                   help="g: base depth = target depth / g (the paper recommends 4)")
    g.add_argument("--width_factor", type=int, default=1,
                   help="base width = target n_embd, heads, ffn_hidden / this (1: depth only)")
    g.add_argument("--base_preset", default="",
                   help="base shape instead of target / growth_factor / width_factor")
    g.add_argument("--stacking_list", default="repeat",
                   help="layer map, target layer i <- base layer list[i]: repeat (the whole stack "
                   "g times, 0101, the paper's), interleave (each layer in place, 0011) or indices "
                   "like 0,1,0,1")
    g.add_argument("--growth_tokens", default="auto",
                   help="d, base tokens: a count, or auto = the paper's timing rule")
    g.add_argument("--growth_fraction", type=float, default=0.25,
                   help="d as a fraction of --max_tokens when the rule asks for the whole budget "
                   "or more (at CPU scale)")
    g.add_argument("--base_lr", type=float, default=0,
                   help="base peak LR, constant after warmup (0: --lr)")
    g.add_argument("--learn_steps", type=int, default=8,
                   help="G_learn: steps on the coefficients (official: 100 of 2M tokens)")
    g.add_argument("--learn_lr", type=float, default=7e-5,
                   help="G_learn: LR of the coefficients (official: 7e-5)")
    g.add_argument("--config", default="",
                   help="JSON of the official repo: src_config_name, trg_config_name, "
                   "src_init_path, stacking_list (set --base_preset, --preset, --init_from, "
                   "--stacking_list)")
    g.add_argument("--compare", action="store_true", help="also train the target from scratch "
                   "with the same total FLOPs: table, speedup, compare.png")
    add_train_args(parser)
    alias(parser, "--init_from", "--grow_from")
    set_help(parser, init_from="grow this checkpoint (or Hugging Face folder) instead of training "
             "a base, save OUT_DIR/grown.pt, then train it for --max_tokens (0: just save)",
             preset=f"TARGET shape: a preset name or NLdH (default: {DEFAULT_TARGET} with n_layer "
             f"{DEFAULT_TARGET_SHAPE['n_layer']}; with --init_from, the base's shape with g times "
             "its layers)")
    # ~8 evaluations per phase: enough points for a val curve
    parser.set_defaults(preset=None, out_dir="out_gstack", max_tokens=640_000, eval_every=8)
    args = parser.parse_args()
    if args.config:
        read_config(args)
    ctx = setup(args)
    check_flags(args, ctx)
    base = model_from_checkpoint(args.init_from, "--init_from") if args.init_from else None
    # growing a checkpoint without training reads no data: its own vocabulary stands
    if args.max_tokens or not base:
        vocab_size = data.load_meta(args.data_dir)["vocab_size"]
    else:
        vocab_size = base.config.vocab_size
    shapes = plan(args, vocab_size, base)
    print0(json.dumps(vars(args)))
    if base:
        return grow_checkpoint(args, ctx, base, *shapes)
    runs, trg = pipeline(args, ctx, *shapes)
    if args.compare:
        compare(args, ctx, runs, trg)


if __name__ == "__main__":
    cli(main)
