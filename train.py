"""
Token-level pre-training, and the one training loop every method script reuses.

  python data.py && python train.py  # built-in corpus, tiny model, CPU, a few minutes
  torchrun --nproc_per_node=2 train.py --preset small  # DDP (gloo on CPU, nccl on CUDA)
  python train.py --resume                           # continue exactly where out/ckpt.pt stopped
  python train.py --sample "def main(" --init_from out/ckpt.pt
  python train.py --eval_bin data/stdlib/val.bin --init_from out/ckpt.pt
  python train.py --export_hf hf/ --init_from out/ckpt.pt   # for transformers and lm-eval (README)

Method scripts import `add_train_args`, `setup`, `build_model`, `train` and the checkpoint helpers
from here; `train(model, args, ctx, loss_fn=...)` is the loop: AdamW, warmup + cosine, gradient
accumulation, DDP, evaluation in loss and bits per byte, progress lines + JSONL log, atomic
checkpoints, exact resume.
"""
import argparse
import ctypes
import dataclasses
import functools
import gc
import glob
import json
import math
import os
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import (FSDPModule, MixedPrecisionPolicy, fully_shard,
                                    register_fsdp_forward_method)
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP

import data
from model import GPT, GPTConfig


class UsageError(Exception):
    """Bad flags or files: reported as one line, before any long work."""


def print0(*a, **k):
    if int(os.environ.get("RANK", 0)) == 0:
        print(*a, **k, flush=True)


def cli(main):
    """Run main(); bad input ends with one line naming the problem and exit code 2, not a
    traceback."""
    finished, code = False, 0
    try:
        main()
        finished = True
    except (UsageError, data.DataError, FloatingPointError) as e:
        print0(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        code = 2
    finally:
        if dist.is_initialized():
            # DDP wrappers in reference cycles hold the group: free them while it is still up
            gc.collect()
            # all ranks tear gloo down together: one rank's teardown while a peer still talks can
            # abort it
            if finished:
                dist.barrier()
            dist.destroy_process_group()
            # A gloo object freed during interpreter shutdown can still abort the process
            # ("terminate called without an active exception") after all work is done; skip that
            # shutdown: every file is closed.
            sys.stdout.flush()
            sys.stderr.flush()
            if finished or code:
                os._exit(code)
    if code:
        sys.exit(code)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help keeps the docstring's layout and ends each flag's help with its default, including
    the defaults a script sets for itself (parser.set_defaults); a default of None or '' is
    described by the help text itself."""

    def _get_help_string(self, action):
        text = action.help or ""
        no_default = action.default in (None, "", argparse.SUPPRESS)
        if action.nargs == 0 or no_default or "%(default)" in text:
            return text  # switches, and defaults that mean "not given"
        # argparse %-formats help text: a literal % in a default must be doubled
        return text + f" (default: {show_default(action.default)})".replace("%", "%%")


def show_default(value):
    """A default as a person would type it: 0.666667 not 0.6666666666666666, a list as its
    items."""
    if isinstance(value, (list, tuple)):
        return " ".join(map(show_default, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def auto(kind, auto_value=-1):
    """argparse type for flags whose derived default is 'auto'; 'auto' and the old -1 both give
    auto_value."""
    # 'auto' rather than 0 there, since 0 is a real value of those flags: no warmup, decay to 0
    def parse(text):
        # -1.0 for a float flag, -1 for an int
        return kind(auto_value) if text in ("auto", "-1") else kind(text)
    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


ALIASES = {}  # new flag -> its old names, for given()


def alias(parser, flag, *old):
    """Old names of a flag keep working (old commands still run); --help lists them beside the new
    name."""
    action = parser._option_string_actions[flag]
    for name in old:
        action.option_strings.append(name)
        parser._option_string_actions[name] = action
    ALIASES.setdefault(flag, []).extend(old)


# The model-shape flags: each overrides the preset's field of the same name (0 or unset: the
# preset's value).
SHAPE_FLAGS = ("flavour", "n_layer", "n_head", "n_kv_head", "n_embd", "ffn_hidden",
               "untie_embeddings", "dropout", "rope_theta")


def add_train_args(parser):
    # Conventions: a flag whose default is derived says so as "0: ..." where 0 means nothing else
    # (sizes, learning rates), and as "auto" where 0 is a value of its own (warmup steps, min_lr).
    g = parser.add_argument_group("model and data")
    g.add_argument("--data_dir", default="data/stdlib",
                   help="folder with train.bin, val.bin, meta.json (made by data.py)")
    g.add_argument("--preset", default="tiny",
                   help="model shape: nano, tiny, tiny-gpt2, small, gpt2[-medium|-large|-xl], "
                   "llama-370m, ..., or 'NLdH' (N layers, hidden d, llama; heads of 128 when 128 "
                   "divides d, else d // 64 heads: 6L2048H has 16 heads, 2L96H one)")
    g.add_argument("--block_size", type=int, default=0,
                   help="positions the model covers (0: the preset's)")
    g.add_argument("--init_from", default="",
                   help="start from this checkpoint (ckpt.pt of this repo) or Hugging Face folder "
                        "instead of --preset")
    g.add_argument("--out_dir", default="out", help="checkpoints and log.jsonl go here")
    g = parser.add_argument_group("model shape",
                                  "each overrides the --preset's value (0 or unset: the preset's); "
                                  "not with --init_from, whose checkpoint fixes the shape")
    g.add_argument("--flavour", choices=["gpt2", "llama"], default=None,
                   help="architecture (model.py's docstring); default: the preset's")
    g.add_argument("--n_layer", type=int, default=0,
                   help="transformer blocks (0: the preset's)")
    g.add_argument("--n_head", type=int, default=0,
                   help="query heads; head dim = n_embd / n_head (0: the preset's)")
    g.add_argument("--n_kv_head", type=int, default=0,
                   help="key/value heads, a divisor of n_head: grouped-query attention, llama only "
                        "(0: the preset's)")
    g.add_argument("--n_embd", type=int, default=0, help="hidden size (0: the preset's)")
    g.add_argument("--ffn_hidden", type=int, default=0,
                   help="MLP hidden size (0: the preset's; when --n_embd or --flavour changes it, "
                        "the flavour's rule: 4 x n_embd, or llama's 8/3 x n_embd rounded up to "
                        "256)")
    g.add_argument("--untie_embeddings", action="store_true",
                   help="llama: an output head of its own instead of the token embedding "
                        "(default: the preset's, tied except llama-370m and larger)")
    g.add_argument("--dropout", type=float, default=None,
                   help="dropout on attention, residual branches and embeddings (default: the "
                        "preset's, 0 in every preset)")
    g.add_argument("--rope_theta", type=float, default=None,
                   help="llama: base of the rotary position frequencies (default: the preset's, "
                        "10000)")
    g = parser.add_argument_group("batch and budget")
    g.add_argument("--seq_len", type=int, default=256, help="tokens per training row")
    g.add_argument("--batch_tokens", type=int, default=8192,
                   help="tokens per optimizer step, over all processes; gradient accumulation is "
                        "derived from it")
    g.add_argument("--micro_batch", type=int, default=16,
                   help="rows per forward pass per process")
    g.add_argument("--max_tokens", type=int, default=1_000_000, help="training budget in tokens")
    g.add_argument("--max_steps", type=int, default=0,
                   help="training budget in optimizer steps (0: from --max_tokens)")
    g = parser.add_argument_group("optimizer")
    g.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    g.add_argument("--min_lr", type=auto(float), default="auto",
                   help="final learning rate of the cosine (auto: lr/10)")
    g.add_argument("--warmup_steps", type=auto(int), default="auto",
                   help="linear warmup steps (auto: 5%% of the steps)")
    g.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="after warmup: cosine decay to min_lr, or constant lr")
    g.add_argument("--weight_decay", type=float, default=0.1,
                   help="AdamW weight decay on matrices and embeddings (not norms, biases)")
    g.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1")
    g.add_argument("--beta2", type=float, default=0.95, help="AdamW beta2")
    g.add_argument("--grad_clip", type=float, default=1.0,
                   help="clip the global gradient norm to this (0: off)")
    g = parser.add_argument_group("evaluation, logging, checkpoints")
    g.add_argument("--eval_every", type=int, default=40,
                   help="evaluate every N steps (and at the end)")
    g.add_argument("--eval_tokens", type=int, default=32768,
                   help="validation tokens per evaluation (fixed, so runs compare)")
    g.add_argument("--log_every", type=int, default=10,
                   help="print and log a progress line every N steps")
    g.add_argument("--ckpt_every", type=int, default=40,
                   help="write the checkpoint every N steps (and at the end)")
    g.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --out_dir")
    g = parser.add_argument_group("system")
    g.add_argument("--seed", type=int, default=1337, help="random seed (model init, sampling)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="autocast dtype (auto: bfloat16 on CUDA, else float32)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model (worth it on GPU)")
    g.add_argument("--fsdp", action="store_true",
                   help="shard parameters, gradients and optimizer state over the processes "
                        "(FSDP2; needs torchrun) and write sharded checkpoints "
                        "(torch.distributed.checkpoint)")
    g.add_argument("--activation_checkpointing", action="store_true",
                   help="recompute each block's activations in backward: less memory, ~1/3 more "
                        "compute")
    return parser


def set_help(parser, **helps):
    """A script's own wording of a shared flag's help (gstack: --preset is the target's shape)."""
    for action in parser._actions:
        if action.dest in helps:
            action.help = helps[action.dest]


def given_flags(parser, dests):
    """The flags among dests that are on the command line (by any of their names), for refusing
    ignored flags."""
    return [a.option_strings[0] for a in parser._actions
            if a.dest in dests and any(map(given, a.option_strings))]


def with_args(args, **changes):
    """A copy of the parsed flags with some changed: a phase or a baseline runs with its own values
    while `args` stays as parsed, since it is what checkpoints record."""
    return argparse.Namespace(**{**vars(args), **changes})


def refuse(flags, why):
    """One line naming flags a script would ignore, instead of ignoring them without a word."""
    if flags:
        raise UsageError(f"{' and '.join(flags)} {'does' if len(flags) == 1 else 'do'} not apply "
                         f"{why}")


@dataclass
class Context:
    rank: int
    world: int
    local_rank: int
    device: str
    dtype: torch.dtype

    @property
    def master(self):
        return self.rank == 0

    def autocast(self):
        # float32 needs no autocast; bf16 autocasts matmuls and keeps reductions in float32
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=self.dtype)


def keep_freed_memory():
    """Linux/glibc: keep freed blocks over 32 MB (logits, their gradients) in the heap for the next
    micro-step. Numbers are unchanged; the heap just never shrinks."""
    # By default malloc unmaps such blocks on free, so each one is page-faulted in anew: 5x the
    # page faults and ~8% of the CPU time of a CPU training step here (bench.py).
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to do
        return
    libc.mallopt(-4, 0)  # M_MMAP_MAX = 0: big blocks come from the heap, not from mmap
    libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: do not hand the top of the heap back to the OS


def setup(args):
    """Distributed init (torchrun sets RANK/WORLD_SIZE), device, dtype and seed. Call once per
    process."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"  # one GPU per process, picked by torchrun's local rank
    valid = ["cpu", *(["mps"] if torch.backends.mps.is_available() else []),
             *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if device not in valid:
        raise UsageError(f"--device {args.device}: not a device of this machine (here: auto, "
                         f"{', '.join(valid)})")
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
        # TF32 matmuls: much faster on Ampere and later, and precise enough for training
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    elif device == "cpu" and sys.platform.startswith("linux"):
        keep_freed_memory()
    if getattr(args, "fsdp", False) and "WORLD_SIZE" not in os.environ:
        raise UsageError("--fsdp shards over processes: launch with torchrun --nproc_per_node=N")
    if (world > 1 or getattr(args, "fsdp", False)) and not dist.is_initialized():
        # nccl for GPUs; gloo runs the same collectives on CPU, so DDP and FSDP work there too
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(args.dtype)
    if dtype is None:  # auto
        cuda_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if cuda_bf16 else torch.float32
    # the same seed on every rank: each builds the same initial weights
    torch.manual_seed(args.seed)
    return Context(rank, world, local_rank, device, dtype)


def get_lr(step, total_steps, lr, min_lr, warmup_steps, schedule="cosine"):
    """Linear warmup to lr, then cosine decay to min_lr at total_steps (or constant lr)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps  # step + 1: the first step does not train at lr 0
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)


# --- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(path, state):
    """Atomic: a kill at any moment leaves the previous checkpoint intact. A readable JSON of all
    but the tensors goes beside it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    meta = {k: v for k, v in state.items() if k not in ("model", "optimizer", "rng")}
    # the JSON is renamed second: it may lag one save behind, never run ahead
    for target, write in ((path, lambda f: torch.save(state, f)),
                          (os.path.splitext(path)[0] + ".json",
                           lambda f: f.write(json.dumps(meta, indent=2).encode()))):
        # temp file, fsync, rename over the old one: the rename is atomic, so a reader (or a
        # resume after a kill) sees the old file or the whole new one
        tmp = f"{target}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    os.fsync(fd)  # make the rename itself durable
    os.close(fd)


def load_checkpoint(path, flag="checkpoint", weights=False):
    """torch.load of a ckpt.pt, memory-mapped: tensors are read from the file when used, not copied
    in whole. A sharded one (--fsdp) names the folder of its weights instead; weights=True then
    reads them whole into ckpt["model"]. A missing or unreadable file is one line that names the
    flag it came from."""
    if not os.path.isfile(path):
        raise UsageError(f"{flag} {path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:
        raise UsageError(f"{flag} {path}: cannot be read ({type(e).__name__}); is it a ckpt.pt of "
                         "this repository?")
    if weights and "sharded" in ckpt:
        folder = os.path.join(os.path.dirname(path), ckpt["sharded"])
        ckpt["model"] = read_sharded(folder, ckpt["model_args"], flag).state_dict()
    return ckpt


def read_sharded(folder, model_args, flag="checkpoint"):
    """The whole GPT from a sharded checkpoint folder, read by this process alone, whatever world
    size wrote it."""
    with torch.device("meta"):  # no random init of weights that are read next
        model = GPT(GPTConfig(**model_args))
    # storage without an init (every value is read next); to_empty unties the head, so tie again
    model.to_empty(device="cpu")
    model.tie_weights()
    model.init_buffers()
    state = {"model": get_model_state_dict(model)}
    try:
        # DCP warns that it reads in one process: that is the point here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(state, checkpoint_id=folder, no_dist=True)
    except Exception as e:
        raise UsageError(f"{flag}: sharded weights {folder} cannot be read "
                         f"({type(e).__name__})") from None
    set_model_state_dict(model, state["model"])
    return model


def model_from_checkpoint(path, flag="--init_from"):
    """A GPT from a ckpt.pt of this repository, or from a Hugging Face GPT-2/Llama folder; errors
    name `flag`."""
    if os.path.isdir(path):
        try:  # no config.json, unsupported options, missing weights
            return GPT.from_hf(path)
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise UsageError(f"{flag} {path}: a folder must be a Hugging Face GPT-2/Llama "
                             f"checkpoint ({e})") from None
    ckpt = load_checkpoint(path, flag)
    try:  # e.g. nanoGPT's ckpt.pt: model_args with other keys (bias), weights under other names
        if "sharded" in ckpt:
            folder = os.path.join(os.path.dirname(path), ckpt["sharded"])
            model = read_sharded(folder, ckpt["model_args"], flag)
        else:
            # take the file's (memory-mapped) tensors rather than init, then copy
            with torch.device("meta"):
                model = GPT(GPTConfig(**ckpt["model_args"]))
            model.load_state_dict(ckpt["model"], assign=True)
            model.tie_weights()
            model.init_buffers()
    # one line, not torch's list of every tensor
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UsageError(f"{flag} {path} is not a GPT of this repository "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:240]})") from None
    # of the data it was trained on (None: unknown, not checked)
    model.tokenizer_fingerprint = ckpt.get("fingerprint")
    return model


def given(flag):
    """Whether --flag (or an old name of it) is on the command line, as `--flag V` or `--flag=V`:
    for flags whose default is a value."""
    # argparse cannot tell a default from the same value typed out; sys.argv can
    names = [flag, *ALIASES.get(flag, [])]
    return any(a == n or a.startswith(n + "=") for a in sys.argv[1:] for n in names)


def check_seq_len(args, model):
    """--seq_len must fit the positions the model covers; say which flag can change them."""
    if args.seq_len > model.config.block_size:
        fix = (f"the model from --init_from covers {model.config.block_size} positions: lower "
               "--seq_len" if args.init_from else "raise --block_size")
        raise UsageError(f"--seq_len {args.seq_len} exceeds the model's block_size "
                         f"{model.config.block_size} ({fix})")


def tokenizer_problem(model, source, data_dir):
    """Why a loaded model cannot go on with the data in data_dir, or None: another vocabulary size,
    or the same size from another tokenizer (its checkpoint records the data's fingerprint)."""
    # the same size from another tokenizer would train silently on wrong ids
    meta = data.load_meta(data_dir)
    if model.config.vocab_size != meta["vocab_size"]:
        return (f"{source} has vocabulary {model.config.vocab_size}, but the data in {data_dir} "
                f"has {meta['vocab_size']}")
    seen, here = getattr(model, "tokenizer_fingerprint", None), meta.get("fingerprint")
    if seen and here and seen != here:
        return (f"{source} was trained on data of another tokenizer (fingerprint {seen}; the data "
                f"in {data_dir}: {here})")


def shape_flags_given():
    """The model-shape flags on the command line (SHAPE_FLAGS), as --names."""
    return [f"--{f}" for f in SHAPE_FLAGS if given(f"--{f}")]


def model_config(args, vocab_size, fields=None):
    """GPTConfig of --preset (or of the config `fields`, e.g. the base gstack grows), with
    --block_size and the model-shape flags on top. Every problem, naming its flag, in one
    UsageError."""
    source = f"--preset {args.preset}" if fields is None else "the model"
    try:
        shape = dict(fields) if fields is not None else GPTConfig.preset_fields(args.preset)
    except ValueError as e:
        raise UsageError(f"--preset: {e}") from None
    defaults = {f.name: f.default for f in dataclasses.fields(GPTConfig)}
    # the data decides the vocabulary, never the preset
    shape = {**defaults, **shape, "vocab_size": vocab_size}
    # absent from hand-made Namespaces: the preset's
    flags = {f: getattr(args, f, None) for f in SHAPE_FLAGS}
    sizes = ("n_layer", "n_head", "n_kv_head", "n_embd", "ffn_hidden")
    problems = [f"--{f} {flags[f]} must not be negative (0: the preset's)" for f in sizes
                if (flags[f] or 0) < 0]
    if flags["dropout"] is not None and not 0 <= flags["dropout"] < 1:
        problems.append(f"--dropout {flags['dropout']} must lie in [0, 1)")
    if flags["rope_theta"] is not None and flags["rope_theta"] <= 0:
        problems.append(f"--rope_theta {flags['rope_theta']} must be positive")
    if problems:
        raise UsageError("; ".join(problems))
    # the fields the flags set (None, 0 and False mean "the preset's"); --untie_embeddings sets
    # tie_embeddings, the opposite of its name
    new = {f: v for f, v in flags.items() if v not in (None, 0, False) and f != "untie_embeddings"}
    if getattr(args, "block_size", 0):
        new["block_size"] = args.block_size
    if flags["untie_embeddings"]:
        new["tie_embeddings"] = False
    flavour_changes = new.get("flavour", shape["flavour"]) != shape["flavour"]
    if ("n_embd" in new or flavour_changes) and "ffn_hidden" not in new:
        # the preset's MLP width belongs to its width and flavour: take the flavour's rule
        new["ffn_hidden"] = 0
    shape.update(new)

    def name(f):  # a field as the user set it, or where it came from
        return f"--{f} {shape[f]}" if f in new else f"{f} {shape[f]} ({source})"
    c = shape
    # with a size below 1, these checks would divide by it: GPTConfig names the size instead
    if all(c[f] > 0 for f in ("n_layer", "n_head", "n_embd")) and c["n_kv_head"] >= 0:
        kv = c["n_kv_head"] or c["n_head"]
        if c["n_embd"] % c["n_head"]:
            problems.append(f"{name('n_embd')} is not divisible by {name('n_head')}")
        # RoPE rotates pairs of channels
        elif c["flavour"] == "llama" and (c["n_embd"] // c["n_head"]) % 2:
            by = " and ".join(f"--{f}" for f in ("n_embd", "n_head") if f in new) or source
            problems.append(f"head dim n_embd / n_head = {c['n_embd']} / {c['n_head']} = "
                            f"{c['n_embd'] // c['n_head']} is odd ({by}); rotary positions need "
                            f"an even head dim")
        if c["n_head"] % kv:
            kv_name = name('n_kv_head') if c['n_kv_head'] else f'n_kv_head {kv}'
            problems.append(f"{name('n_head')} is not divisible by {kv_name}")
        if c["flavour"] == "gpt2" and kv != c["n_head"]:
            problems.append(f"{name('n_kv_head')}: the gpt2 flavour has no grouped-query attention")
    if c["flavour"] == "gpt2" and not c["tie_embeddings"]:
        problems.append(f"{'--untie_embeddings' if flags['untie_embeddings'] else source}: the "
                        "gpt2 flavour always ties the embedding and the head")
    if c["flavour"] == "gpt2" and "rope_theta" in new:
        problems.append("--rope_theta: the gpt2 flavour has learned positions, not rotary ones")
    if problems:
        raise UsageError("; ".join(problems))
    try:
        return GPTConfig(**shape)
    except ValueError as e:  # what is left: sizes of the preset itself (4L0H)
        raise UsageError(f"{source}: {e}") from None


def build_model(args, vocab_size):
    """A fresh model from --preset and the shape flags, or the weights of --init_from; its
    tokenizer must be the data's."""
    if args.init_from:
        ignored = [f for f in ("--preset", "--block_size") if given(f)] + shape_flags_given()
        # the checkpoint fixes the shape; applying them would load weights into another model
        if ignored:
            raise UsageError(f"--init_from {args.init_from} sets the model's shape: leave out "
                             f"{' and '.join(ignored)}")
        model = model_from_checkpoint(args.init_from)
        problem = tokenizer_problem(model, f"--init_from {args.init_from}", args.data_dir)
        if problem:
            raise UsageError(problem)
        return model
    return fresh_model(model_config(args, vocab_size), args)


def fresh_model(cfg, args):
    """GPT(cfg); under --fsdp without storage, for train() to give each process its shards and draw
    their init (the same weights)."""
    return GPT.on_meta(cfg) if getattr(args, "fsdp", False) else GPT(cfg)


def whole(model, out_dir):
    """model, or if train() sharded it (--fsdp), a whole copy read back from its final checkpoint in
    out_dir: for method code that reads a trained model's weights (growth, inheritance,
    re-initialisation)."""
    if is_sharded(model):
        return model_from_checkpoint(os.path.join(out_dir, "ckpt.pt"))
    return model


def check_args(args, ctx, seq_len=None, micro_batch=None):
    """Every flag problem at once, in one line, before any work."""
    seq_len, micro_batch = seq_len or args.seq_len, micro_batch or args.micro_batch
    positive = ("seq_len", "batch_tokens", "micro_batch", "eval_tokens", "log_every",
                "eval_every", "ckpt_every", "lr")
    problems = [f"--{flag} must be positive" for flag in positive if getattr(args, flag) <= 0]
    non_negative = ("max_tokens", "max_steps", "block_size", "weight_decay", "grad_clip")
    problems += [f"--{flag} must not be negative" for flag in non_negative
                 if getattr(args, flag) < 0]
    problems += [f"--{flag} {getattr(args, flag)} must lie in [0, 1)" for flag in ("beta1", "beta2")
                 if not 0 <= getattr(args, flag) < 1]
    if args.warmup_steps < -1:
        problems += [f"--warmup_steps {args.warmup_steps} must be -1 (auto) or more"]
    if args.min_lr > args.lr:
        problems += [f"--min_lr {args.min_lr} exceeds --lr {args.lr}: the cosine would rise"]
    # the rest divides by these sizes: only once they are valid
    if not problems and args.batch_tokens % (micro_batch * seq_len * ctx.world):
        problems.append(f"--batch_tokens {args.batch_tokens} is not divisible by micro_batch x "
                        f"seq_len x world size = {micro_batch} x {seq_len} x {ctx.world} = "
                        f"{micro_batch * seq_len * ctx.world}")
    if not problems and not args.max_steps and args.max_tokens < args.batch_tokens:
        problems.append(f"--max_tokens {args.max_tokens} is less than one step (--batch_tokens "
                        f"{args.batch_tokens})")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        problems.append(f"--out_dir {args.out_dir} is a file, not a folder")
    # gstack's target may be None: it checks its own
    if not getattr(args, "init_from", "") and getattr(args, "preset", None):
        try:
            model_config(args, vocab_size=1)  # the shape checks do not depend on the vocabulary
        except UsageError as e:
            problems.append(str(e))
    if problems:
        raise UsageError("; ".join(problems))


# --- FSDP2 and sharded checkpoints ---------------------------------------------------------------
def is_sharded(model):
    return isinstance(model, FSDPModule)


def shard(model, ctx, compile=False):
    """FSDP2 (PyTorch's fully_shard): each block is one unit of all-gather / reduce-scatter, the
    root holds the embeddings, head and final norm. A model built on the meta device (GPT.on_meta)
    gets storage for its own shards only and draws them as GPT(cfg) would, one whole tensor at a
    time: any world size starts alike."""
    # an explicit mesh: a gloo group must stay on CPU
    mesh = init_device_mesh(ctx.device.split(":")[0], (ctx.world,))
    # bf16 compute, fp32 gradient reduction: sums over many ranks lose precision in bf16
    if ctx.device.startswith("cuda") and ctx.dtype == torch.bfloat16:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        policy = MixedPrecisionPolicy()
    on_meta = model.wte.weight.is_meta
    if not on_meta:
        model.to(ctx.device)
    for block in model.blocks:
        if compile:
            block.compile()  # per block, before sharding: the graph then holds no collective
        fully_shard(block, mesh=mesh, mp_policy=policy)
    # the root last: it takes the parameters no block holds (embeddings, head, final norm)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    # loss functions that call model.wte / model.body / model.lm_head run inside model.run(), which
    # then gathers the root's weights as forward() does
    register_fsdp_forward_method(model, "run")
    if on_meta:
        # storage for this process's shards only, then their init, drawn as GPT(cfg) would
        model.to_empty(device=ctx.device)
        model.init_buffers(ctx.device)
        model.init_weights(fill=lambda p, init: p.to_local().copy_(local_shard(p, init)))
    return model


def local_shard(param, init):
    """This process's rows of init applied to a whole tensor of param's (global) shape, drawn on the
    CPU like an unsharded model's init; one such tensor exists at a time."""
    whole = torch.empty(param.shape, dtype=param.dtype)
    init(whole)
    # FSDP2 shards dim 0 as torch.chunk does
    chunks, rank = whole.chunk(param.device_mesh.size()), param.device_mesh.get_local_rank()
    # fewer rows than processes: the last ranks hold an empty shard
    rows = chunks[rank] if rank < len(chunks) else whole[:0]
    assert rows.shape == param.to_local().shape, (rows.shape, param.to_local().shape)
    return rows


def save_sharded(ckpt_path, state, model, optimizer, ctx):
    """Every process writes its shards (torch.distributed.checkpoint) into a new folder beside
    ckpt_path; then rank 0 writes ckpt_path, the rest of the state plus the folder's name,
    atomically, and drops older folders. A kill at any moment leaves a ckpt_path that names a whole
    folder."""
    name = f"{os.path.splitext(os.path.basename(ckpt_path))[0]}.dcp-{state['step']:07d}"
    folder = os.path.join(os.path.dirname(ckpt_path), name)
    if ctx.master and os.path.exists(folder):
        shutil.rmtree(folder)  # left by a save that was interrupted
    dist.barrier()  # no rank writes into the folder before rank 0 has cleared it
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=folder)
    if ctx.master:
        # ckpt_path names the new folder only once it is whole; only then do the old ones go
        save_checkpoint(ckpt_path, {**state, "sharded": name})
        for old in glob.glob(os.path.join(os.path.dirname(ckpt_path), "*.dcp-*")):
            if os.path.basename(old) != name:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def load_sharded(folder, model, optimizer=None):
    """A sharded checkpoint into model (sharded or whole: DCP reshards to any world size) and
    optimizer."""
    if optimizer:
        model_state, optim_state = get_state_dict(model, optimizer)
    else:
        model_state, optim_state = get_model_state_dict(model), None
    state = {"model": model_state, **({"optimizer": optim_state} if optimizer else {})}
    # a whole model: each process reads it all, alone (DCP warns of that)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, checkpoint_id=folder, no_dist=not is_sharded(model))
    if optimizer:
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"])
    else:
        set_model_state_dict(model, state["model"])


def token_loss(model, batch):
    """Next-token cross-entropy on windows batch [B, T+1]."""
    return model(batch[:, :-1], batch[:, 1:])[1]


class LossModule(nn.Module):
    """Wraps model + loss_fn so DDP sees one forward: loss functions that call model.wte /
    model.body directly (patch training) still get their gradients all-reduced."""

    def __init__(self, model, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12,
              "4090": 165e12}


def peak_flops(ctx):
    """Dense bf16 peak of the GPU, for MFU; None when unknown (e.g. on CPU)."""
    if not ctx.device.startswith("cuda") or ctx.dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(ctx.device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def all_mean(value, ctx):
    if ctx.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.item() / ctx.world


def rank0_decides(flag, ctx):
    """Rank 0's value of a bool on every rank. For checks of files that rank 0 may be writing right
    now."""
    # each rank looking for itself can see another state and take another branch, and their
    # collectives then mismatch
    if ctx.world == 1:
        return flag
    t = torch.tensor([int(flag)], device=ctx.device)
    dist.broadcast(t, 0)
    return bool(t.item())


@functools.lru_cache(maxsize=8)
def token_bytes(data_dir, fingerprint):
    """Per-id UTF-8 byte counts of data_dir's tokenizer as a tensor, or None when the folder names
    no tokenizer that loads here (token files made by other tools): their bits per byte is then
    unknown (NaN)."""
    # the data's fingerprint is part of the cache key, so a folder prepared again with another
    # tokenizer is read again
    try:
        return torch.from_numpy(data.load_tokenizer(data_dir).token_bytes)
    except data.DataError:
        return None


@torch.no_grad()
def evaluate(model, args, ctx, val_bin=None, max_tokens=None):
    """Mean next-token loss over the first --eval_tokens of the validation file (summed over ranks),
    and bits per byte of exactly those targets: their summed loss / ln 2 / their UTF-8 bytes
    (specials count 0)."""
    # bits per byte so that it compares across tokenizers; summed, not averaged per batch, so it
    # does not depend on --eval_tokens, the world size or the micro-batch
    path = val_bin or os.path.join(args.data_dir, "val.bin")
    fingerprint = data.load_meta(args.data_dir).get("fingerprint")
    tokens = data.read_tokens(path, model.config.vocab_size, fingerprint)
    n_bytes = token_bytes(str(args.data_dir), fingerprint)
    n_bytes = n_bytes.to(ctx.device) if n_bytes is not None else None
    was_training = model.training
    model.eval()
    seq_len = min(args.seq_len, model.config.block_size)
    # [summed loss in nats, scored tokens, their bytes], accumulated on the device: no sync per
    # batch; float64, since a float32 sum of many losses drifts
    total = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    windows = data.eval_windows(tokens, args.micro_batch, seq_len, max_tokens or args.eval_tokens,
                                ctx.rank, ctx.world)
    for batch in windows:
        batch = batch.to(ctx.device)
        with ctx.autocast():
            loss = token_loss(model, batch)
        targets = batch[:, 1:]
        total[0] += loss.double() * targets.numel()
        total[1] += targets.numel()
        if n_bytes is not None:
            total[2] += n_bytes[targets].sum()
    # once, after the loop: ranks may have had different numbers of batches
    if ctx.world > 1:
        dist.all_reduce(total)
    model.train(was_training)  # back as the caller had it (the loop evaluates mid-training)
    nats, n_tokens, n_bytes_scored = total.tolist()
    if n_bytes is not None and n_bytes_scored:
        bpb = nats / math.log(2) / n_bytes_scored
    else:
        bpb = float("nan")
    return {"loss": nats / n_tokens, "bpb": bpb}


# --- the training loop and its pieces ------------------------------------------------------------
def make_optimizer(model, args, lr, ctx):
    """AdamW with weight decay on matrices and embeddings (p.dim() >= 2), not on norms and
    biases."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(args.beta1, args.beta2),
                             # one kernel per tensor instead of ~10 foreach passes: on CPU too,
                             # ~5x faster
                             fused=ctx.device.split(":")[0] in ("cuda", "cpu"))


def resume_checkpoint(out_dir, model, optimizer, ctx):
    """The checkpoint in out_dir for --resume: its weights go into model and, unless its run is
    finished, its optimizer state into optimizer. Returns it for the rest (step, data, RNG)."""
    ckpt_path = os.path.join(out_dir, "ckpt.pt")
    for stale in glob.glob(os.path.join(out_dir, "ckpt.*.tmp*")) if ctx.master else []:
        # a whole-size temp file left by a kill inside save_checkpoint; its rename never happened
        os.remove(stale)
    ckpt = load_checkpoint(ckpt_path)
    differ = [f"{k} {ckpt['model_args'].get(k)} there, {v} here"
              for k, v in model.model_args().items() if ckpt["model_args"].get(k) != v]
    if differ:
        raise UsageError(f"--resume: {ckpt_path} holds another model ({', '.join(differ)}); use "
                         "its flags or another --out_dir")
    done = ckpt.get("done")  # a finished run needs its weights only, for the caller
    if "sharded" in ckpt:  # written under --fsdp, by any number of processes
        load_sharded(os.path.join(out_dir, ckpt["sharded"]), model, None if done else optimizer)
    elif is_sharded(model):
        raise UsageError(f"--resume: {ckpt_path} was written without --fsdp: resume it without "
                         "--fsdp, or use another --out_dir")
    else:
        model.load_state_dict(ckpt["model"])
        if not done:
            optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt


def write_checkpoint(ckpt_path, state, model, optimizer, ctx):
    """state plus the weights and the optimizer state at ckpt_path: every process its shards under
    --fsdp, else rank 0 alone (the ranks' copies are the same)."""
    if is_sharded(model):
        save_sharded(ckpt_path, state, model, optimizer, ctx)
    elif ctx.master:
        save_checkpoint(ckpt_path, {**state, "model": model.state_dict(),
                                    "optimizer": optimizer.state_dict()})
    # the file is whole before any rank goes on: the caller may read it next (multiround)
    if ctx.world > 1:
        dist.barrier()


def training_runner(model, loss_fn, args, ctx):
    """What the loop calls for a micro-batch's loss: loss_fn(model, batch), wrapped for FSDP, or
    for torch.compile and DDP."""
    if is_sharded(model):
        # model.run is an FSDP forward method: it gathers the root's weights for loss_fn
        return functools.partial(model.run, loss_fn)
    # one module around model and loss_fn: DDP then sees (and all-reduces) every gradient, also
    # of a loss that calls model.wte / model.body itself
    runner = LossModule(model, loss_fn)
    if args.compile:
        runner = torch.compile(runner)
    if ctx.world > 1:
        runner = DDP(runner, device_ids=[ctx.local_rank] if ctx.device.startswith("cuda") else None)
    return runner


def append_log(log_path, ctx, fields):
    """fields, floats rounded to 6 digits, as one JSON line at the end of log_path (written by rank
    0); returns the rounded fields."""
    fields = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in fields.items()}
    if ctx.master:
        with open(log_path, "a") as f:
            f.write(json.dumps(fields) + "\n")
    return fields


def progress_line(fields, eta):
    """'step 40 | tokens 327,680 | loss 5.123 | ... | eta 1m05s'."""
    return (" | ".join(f"{k} {v:,.0f}" if k in ("tokens", "tok_per_s") else f"{k} {v:.4g}"
                       for k, v in fields.items())
            + f" | eta {data.format_duration(eta)}")


def train(model, args, ctx, *, out_dir, loss_fn=token_loss, seq_len=None, micro_batch=None,
          max_tokens=None, data_position=0, train_bin=None, flops_per_token=None, lr=None,
          resume=None, schedule=None, schedule_offset=0, schedule_steps=None):
    """The training loop. Trains `model` in place with a fresh AdamW and schedule on windows of
    seq_len+1 tokens read sequentially from train_bin starting at token data_position;
    loss_fn(model, batch) gives the loss. Checkpoints go to out_dir/ckpt.pt; with resume, a
    checkpoint there is continued (and a finished one returned at once). A later phase may continue
    an earlier phase's LR schedule instead of restarting it: its step 0 is then step
    schedule_offset of a schedule_steps-long schedule. Returns a summary dict."""
    # the keyword arguments override the flags for one phase of a method script
    seq_len, micro_batch = seq_len or args.seq_len, micro_batch or args.micro_batch
    lr = lr or args.lr
    min_lr = args.min_lr if args.min_lr >= 0 else lr / 10
    resume = args.resume if resume is None else resume
    check_args(args, ctx, seq_len, micro_batch)
    ckpt_path = os.path.join(out_dir, "ckpt.pt")

    # data: the token files must match the model's vocabulary, and the data's tokenizer (the same
    # vocabulary size from another tokenizer is refused too)
    fingerprint = data.load_meta(args.data_dir).get("fingerprint")
    vocab_size = model.config.vocab_size
    tokens = data.read_tokens(train_bin or os.path.join(args.data_dir, "train.bin"), vocab_size,
                              fingerprint)
    val = data.read_tokens(os.path.join(args.data_dir, "val.bin"), vocab_size, fingerprint)
    # a validation file too short for one window fails now, not at the first evaluation
    next(data.eval_windows(val, 1, min(args.seq_len, model.config.block_size), args.eval_tokens))
    # batch_tokens is the global batch; check_args made sure it divides evenly
    accum = args.batch_tokens // (micro_batch * seq_len * ctx.world)
    # sequential and rank-offset: deterministic, and resumable from a position
    stream = data.BatchStream(tokens, micro_batch, seq_len, ctx.rank, ctx.world, accum,
                              position=data_position)
    max_steps = args.max_steps or (max_tokens or args.max_tokens) // args.batch_tokens
    schedule_steps = schedule_steps or max_steps
    # auto: 5% of the schedule, at least one step
    warmup = args.warmup_steps if args.warmup_steps >= 0 else max(1, schedule_steps // 20)
    flops_per_token = flops_per_token or model.flops_per_token(seq_len)

    # model and optimizer; sharding comes first, so that the optimizer holds the shards
    if getattr(args, "fsdp", False) and not is_sharded(model):
        shard(model, ctx, compile=args.compile)
    model.to(ctx.device).train()
    model.activation_checkpointing = getattr(args, "activation_checkpointing", False)
    optimizer = make_optimizer(model, args, lr, ctx)

    # a fresh start, or --resume from the checkpoint in out_dir
    step, tokens_seen, elapsed = 0, 0, 0.0
    if not resume and os.path.exists(ckpt_path):
        print0(f"note: {ckpt_path} exists; this fresh run will write over it (--resume continues "
               "it instead)")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"{out_dir} is a file, not a folder for checkpoints (--out_dir)")
    if resume and not os.path.exists(ckpt_path):
        print0(f"note: --resume: no checkpoint {ckpt_path} yet, so this run starts from the "
               "beginning", file=sys.stderr)
    if resume and os.path.exists(ckpt_path):
        ckpt = resume_checkpoint(out_dir, model, optimizer, ctx)
        if ckpt.get("done"):
            print0(f"{ckpt_path} is finished; skipping this run")
            return ckpt["summary"]
        # the data position and the CPU generator too: the resumed run reads the tokens and makes
        # the random draws that the unbroken run would have
        stream.load_state_dict(ckpt["data"])
        torch.set_rng_state(ckpt["rng"]["cpu"])
        step, tokens_seen, elapsed = ckpt["step"], ckpt["tokens"], ckpt["elapsed"]
        print0(f"resumed {ckpt_path} at step {step} ({tokens_seen:,} tokens)")
    runner = training_runner(model, loss_fn, args, ctx)
    os.makedirs(out_dir, exist_ok=True)
    log_path, peak = os.path.join(out_dir, "log.jsonl"), peak_flops(ctx)
    if step == 0 and ctx.master:  # a fresh run starts a fresh log; a resumed one appends
        open(log_path, "w").close()
    # a ckpt.pt left by an earlier run (no --resume) is not this run's
    last_good = ckpt_path if step else None

    def checkpoint(done, summary=None):
        nonlocal last_good
        # everything but the tensors is plain data, also written as ckpt.json for a person to read
        state = {"model_args": model.model_args(), "step": step, "tokens": tokens_seen,
                 "elapsed": elapsed, "max_steps": max_steps, "data": stream.state_dict(),
                 "rng": {"cpu": torch.get_rng_state()}, "args": vars(args), "done": done,
                 "summary": summary, "fingerprint": fingerprint}
        write_checkpoint(ckpt_path, state, model, optimizer, ctx)
        last_good = ckpt_path

    print0(f"training {model.num_params():,} parameters for {max_steps} steps of "
           f"{args.batch_tokens:,} tokens ({micro_batch} x {seq_len} x {accum} accumulation x "
           f"{ctx.world} processes) -> {out_dir}")
    t0, window_tokens, window_steps = time.perf_counter(), 0, 0
    # summed on the device: reading it (.item()) would wait for the device every step
    loss_sum = torch.zeros((), device=ctx.device)
    # for the ETA: wall time per step of this process, evaluations included
    t_start, step_start = t0, step
    while step < max_steps:
        step_lr = get_lr(schedule_offset + step, schedule_steps, lr, min_lr, warmup,
                         schedule or args.schedule)
        for group in optimizer.param_groups:
            group["lr"] = step_lr
        for micro in range(accum):
            # non_blocking: the host-to-GPU copy overlaps the work still queued on the GPU
            batch = stream.next_micro().to(ctx.device, non_blocking=True)
            # only the last micro-step all-reduces (FSDP: reduce-scatters) gradients; the others
            # accumulate locally, so a step communicates once, not accum times
            last_micro = micro == accum - 1
            if is_sharded(model):
                model.set_requires_gradient_sync(last_micro)
            if ctx.world == 1 or last_micro or is_sharded(model):
                sync = nullcontext()
            else:
                sync = runner.no_sync()
            with sync, ctx.autocast():
                # / accum: the accumulated gradient is that of the whole batch's mean loss
                loss = runner(batch) / accum
            loss.backward()
            loss_sum += loss.detach()
        # --grad_clip 0 clips at infinity: the norm is still computed, for the log
        max_norm = args.grad_clip if args.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if isinstance(grad_norm, DTensor):
            # FSDP: the norm over all shards, the same on every process
            grad_norm = grad_norm.full_tensor()
        # a non-finite gradient poisons the logged loss too, so the check below sees it
        loss_sum += 0.0 * grad_norm
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # frees the gradients' memory until the next backward
        step += 1
        tokens_seen += args.batch_tokens
        window_tokens += args.batch_tokens
        window_steps += 1
        last = step == max_steps
        if not (step % args.log_every == 0 or step % args.eval_every == 0
                or step % args.ckpt_every == 0 or last):
            continue

        # a progress line: the mean loss and the speed since the last one
        now = time.perf_counter()  # .item() below waits for the device, so the clock is honest
        # mean over the steps since the last line
        train_loss = all_mean(loss_sum.item() / window_steps, ctx)
        dt, t0 = now - t0, now
        elapsed += dt
        loss_sum.zero_()
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"non-finite loss {train_loss} at step {step}; last good "
                                     f"checkpoint: {last_good or f'none yet in {out_dir}'} "
                                     "(lower --lr or check the data, then --resume)")
        fields = dict(step=step, tokens=tokens_seen, loss=train_loss, lr=step_lr,
                      grad_norm=grad_norm.item(), tok_per_s=window_tokens / dt, elapsed=elapsed,
                      flops=tokens_seen * flops_per_token)
        if peak:
            # model FLOPs utilisation: each process's share of the throughput against one GPU's peak
            fields["mfu"] = fields["tok_per_s"] * flops_per_token / ctx.world / peak
        window_tokens = window_steps = 0
        if step % args.eval_every == 0 or last:
            t_eval = time.perf_counter()
            ev = evaluate(model, args, ctx)
            fields.update(val_loss=ev["loss"], val_bpb=ev["bpb"],
                          eval_s=time.perf_counter() - t_eval)
            t0 = time.perf_counter()  # the clock measures training only
        fields = append_log(log_path, ctx, fields)
        eta = (time.perf_counter() - t_start) / (step - step_start) * (max_steps - step)
        print0(progress_line(fields, eta))
        if last:
            # the summary goes into the final checkpoint too: a --resume of a finished run
            # returns it at once
            summary = dict(val_loss=fields["val_loss"], val_bpb=fields["val_bpb"],
                           tokens=tokens_seen, steps=step, flops=tokens_seen * flops_per_token,
                           wall_s=elapsed, tok_per_s=tokens_seen / elapsed,
                           data_position=stream.position, ckpt=ckpt_path)
            checkpoint(True, summary)
            print0(f"done: val loss {summary['val_loss']:.4f}, val bpb {summary['val_bpb']:.4f}, "
                   f"{summary['tok_per_s']:,.0f} tok/s; checkpoint {ckpt_path}")
            return summary
        if step % args.ckpt_every == 0:
            checkpoint(False)
            t0 = time.perf_counter()  # the clock leaves the checkpoint's time out too
    raise UsageError(f"nothing to train: the budget is {max_steps} steps")


# --- curves, export, sampling, the script --------------------------------------------------------
def val_curve(out_dirs, steps, x="flops", y="val_loss", x_scale=1.0):
    """(cumulative x, y) points, by default (FLOPs, val loss), from the log.jsonl of consecutive
    runs (phases) out_dirs, each ending at its final step; x is multiplied by x_scale (e.g. tokens
    -> bytes of text)."""
    points, offset = [], 0.0
    for out_dir, last_step in zip(out_dirs, steps):
        # a resumed run logs some steps twice: the later line wins; lines past a run's final step
        # come from an older run in the same folder and are dropped
        with open(os.path.join(out_dir, "log.jsonl")) as f:
            rows = {row["step"]: row for row in map(json.loads, f)
                    if y in row and row["step"] <= last_step}
        points += [(offset + r[x] * x_scale, r[y]) for _, r in sorted(rows.items())]
        offset = points[-1][0] if points else offset  # the next phase goes on from here
    return points


def new_figure(figsize=(6, 4)):
    """A headless matplotlib figure and axes, or None when matplotlib (optional) is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print0("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    return plt.subplots(figsize=figsize)


def save_figure(fig, path, dpi=120):
    """Write the PNG and free the figure (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    print0(f"plot: {path}")


def plot_curves(curves, path, title="", xlabel="training FLOPs", ylabel="val loss"):
    """One line per run ({name: points}) as a PNG, by default val loss against training FLOPs;
    matplotlib is optional."""
    if (figure := new_figure()) is None:
        return
    fig, ax = figure
    for name, points in curves.items():
        ax.plot(*zip(*points), marker=".", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    save_figure(fig, path)


# tokenizer files transformers reads from a folder; an export removes those it does not write, so
# that a stale tokenizer.json or vocab.json of an earlier export cannot take precedence
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                      "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model")


def export_hf(args, ctx, vocab_size):
    """--export_hf DIR: --init_from as a Hugging Face folder that transformers and lm-eval load
    offline: config.json, model.safetensors, generation_config.json (bos/eos = the data's
    end-of-text id) and the tokenizer of --data_dir, which build_model checks against the
    checkpoint's (vocabulary size and fingerprint). data.py explains the BOS convention."""
    if not args.init_from:
        raise UsageError("--export_hf needs --init_from CKPT (a ckpt.pt of this repository or a "
                         "Hugging Face folder)")
    if os.path.exists(args.export_hf) and not os.path.isdir(args.export_hf):
        raise UsageError(f"--export_hf {args.export_hf} is a file, not a folder to export into")
    if args.sample is not None or args.eval_bin:
        raise UsageError("--export_hf: leave out --sample and --eval_bin (one action per run)")
    model = build_model(args, vocab_size)
    tok = data.load_tokenizer(args.data_dir)
    if not ctx.master:  # under torchrun every rank checks the input; one writes
        return
    names = data.save_hf_tokenizer(tok, args.export_hf)  # first: it refuses before writing
    # stale files of another tokenizer would take precedence over the new ones: remove them
    for name in set(HF_TOKENIZER_FILES) - set(names):
        if os.path.isfile(os.path.join(args.export_hf, name)):
            os.remove(os.path.join(args.export_hf, name))
    model.save_hf(args.export_hf, eot_id=tok.eot_id)
    with open(os.path.join(args.export_hf, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": tok.eot_id, "eos_token_id": tok.eot_id}, f, indent=2)
    print0(f"exported {args.init_from} -> {args.export_hf}: config.json, model.safetensors, "
           f"generation_config.json, {', '.join(names)} (tokenizer of {args.data_dir}, "
           f"end-of-text id {tok.eot_id} as bos/eos)")


def sample_text(model, tok, prompt, max_new_tokens, temperature, top_k, device):
    """A continuation of prompt, decoded."""
    # the prompt starts after end-of-text, as every document does in training
    idx = torch.tensor([[tok.eot_id] + tok.encode(prompt)], device=device)
    return tok.decode(model.generate(idx, max_new_tokens, temperature, top_k)[0, 1:].tolist())


def main():
    parser = add_train_args(argparse.ArgumentParser(description=__doc__,
                                                    formatter_class=HelpFormatter))
    parser.add_argument("--sample", default=None,
                        help="print a continuation of this prompt from --init_from (or "
                             "out_dir/ckpt.pt) and exit")
    parser.add_argument("--max_new_tokens", type=int, default=200, help="tokens to sample")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="sampling temperature (0: greedy)")
    parser.add_argument("--top_k", type=int, default=50,
                        help="sample among the k most likely tokens")
    parser.add_argument("--final_sample", default="def ", metavar="PROMPT",
                        help="after training, print a 64-token continuation of PROMPT ('': none)")
    parser.add_argument("--eval_bin", default="",
                        help="evaluate --init_from (or out_dir/ckpt.pt) on this token file and "
                             "exit")
    parser.add_argument("--export_hf", default="", metavar="DIR",
                        help="write --init_from as a Hugging Face folder (config, weights, "
                             "generation config, the tokenizer of --data_dir) for transformers and "
                             "lm-eval; exit")
    # the demo's budget: 244 steps of 4,096 tokens learn more in the same 1M tokens than 122 of
    # 8,192 (val loss 5.21 against 5.48 on data/stdlib); method scripts keep 8,192
    parser.set_defaults(batch_tokens=4096)
    args = parser.parse_args()
    ctx = setup(args)
    meta = data.load_meta(args.data_dir)
    # one-shot actions on a trained model: export, evaluate, sample
    if args.export_hf:
        return export_hf(args, ctx, meta["vocab_size"])
    if args.sample is not None or args.eval_bin:
        args.init_from = args.init_from or os.path.join(args.out_dir, "ckpt.pt")
        model = build_model(args, meta["vocab_size"]).to(ctx.device).eval()
        if args.eval_bin:
            # the whole file: max_tokens beyond any file's length
            return print0(json.dumps(evaluate(model, args, ctx, val_bin=args.eval_bin,
                                              max_tokens=10**12)))
        tok = data.load_tokenizer(args.data_dir)
        return print0(sample_text(model, tok, args.sample, args.max_new_tokens, args.temperature,
                                  args.top_k, ctx.device))
    # training: every flag checked before the model is built
    check_args(args, ctx)
    print0(json.dumps(vars(args)))  # the run's flags, at the top of its output
    model = build_model(args, meta["vocab_size"])
    check_seq_len(args, model)
    train(model, args, ctx, out_dir=args.out_dir)
    # show what the model learned; token files without a tokenizer have nothing to decode with
    try:
        tok = data.load_tokenizer(args.data_dir) if args.final_sample else None
    except data.DataError:
        tok = None
    if tok:
        # the same sample on every run and every rank (FSDP: all ranks run it)
        torch.manual_seed(args.seed)
        text = sample_text(model.eval(), tok, args.final_sample, 64, args.temperature, args.top_k,
                           ctx.device)
        print0(f"sample ({args.final_sample!r} + 64 tokens, temperature {args.temperature}):\n"
               f"{text}")


if __name__ == "__main__":
    cli(main)
