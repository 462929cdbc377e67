"""
How fast this repository trains on this machine: one command, one table, also written as JSON.

  python bench.py                                      # tiny model, built-in corpus, CPU: minutes
  python bench.py --parts token,patch --steps 20       # only the training rows, more steps
  python bench.py --preset tiny-gpt2 --parts token     # the GPT-2 flavour (nanoGPT's shape)
  python data.py --tokenizer gpt2 --out_data_dir data/stdlib-gpt2  # then, on a GPU, GPT-2 small:
  python bench.py --data_dir data/stdlib-gpt2 --preset gpt2 --seq_len 1024 --micro_batch 16 \
      --batch_tokens 65536                             # bf16, bf16 + compile, MFU

Side by side, in one process:
  token, patch K  training tok/s and ms per optimizer step through train.py's own loop, token
                  level and patch level (patch_train.patch_loss) at each K, with the same model,
                  weights and tokens per step; medians over --steps steps after --warmup steps.
                  `x token` is the patch/token tok/s ratio (ideal K). `data wait` is the share of
                  step time spent inside BatchStream.next_micro.
  eval            evaluation tok/s (train.evaluate, forward only)
  data            BatchStream's own batches/s on train.bin (warm page cache)
  prepare         data.py's throughput in MB of text/s with 1 process and with every core on a
                  subset of the stdlib corpus: tokenizing alone, preparing with the data set's
                  tokenizer, and preparing with a newly trained BPE (whose training is serial, so
                  it caps that row's speed-up)
Peak memory is the process's peak RSS during each row on CPU, and the peak allocated by tensors on
CUDA.
"""
import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import data
import train
from patch_train import patch_loss_fn, patch_micro_batch
from train import (HelpFormatter, UsageError, add_train_args, alias, build_model, check_args,
                   check_seq_len, cli, given_flags, print0, setup, with_args)

# the default parts; "memory" is heavy, so it runs only when asked for by name
PARTS = ("token", "patch", "eval", "data", "prepare")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# --- measuring -----------------------------------------------------------------------------------
def reset_peak_memory(device):
    """Restart the peak counter: CUDA's allocator statistics, or Linux's peak RSS (VmHWM)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    else:
        # writing 5 to clear_refs resets VmHWM to the current RSS (Linux only; elsewhere a no-op)
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib(device):
    """Peak since reset_peak_memory: tensors allocated on CUDA, or the process's resident set on
    CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    # no /proc (macOS): the lifetime peak, which cannot be reset; bytes on macOS, KiB elsewhere
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def sync(device):
    # CUDA runs asynchronously: without a sync the clock would stop before the work is done
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timed_batches(waits):
    """Append the seconds of every BatchStream.next_micro call made inside the block to `waits`."""
    # train() builds its own stream, so the method is wrapped for the block's duration; nothing
    # else changes
    original = data.BatchStream.next_micro

    def next_micro(self):
        t = time.perf_counter()
        rows = original(self)
        waits.append(time.perf_counter() - t)
        return rows

    data.BatchStream.next_micro = next_micro
    try:
        yield waits
    finally:
        data.BatchStream.next_micro = original


def time_training(args, ctx, vocab_size, patch_size=1):
    """warmup + steps optimizer steps of train.train() on a fresh model (same seed, same weights for
    every row), logging every step; medians over the steps after the warm-up. patch_size > 1 trains
    at patch level the way patch_train.py's phase 1 does: rows of K x seq_len tokens, each step the
    same batch_tokens."""
    torch.manual_seed(args.seed)
    model = build_model(args, vocab_size)
    # a progress line every step gives one tok/s per step; evaluation and checkpoints never
    # happen, so they do not land in the timings
    run_args = with_args(args, max_steps=args.warmup + args.steps, log_every=1, eval_every=10**9,
                         ckpt_every=10**9, eval_tokens=args.seq_len + 1, resume=False,
                         patch_size=patch_size)
    patch = patch_size > 1
    # the body runs once per K tokens: a patch row of K x seq_len tokens costs one of seq_len
    flops_per_token = model.flops_per_token(args.seq_len) / patch_size
    waits = []
    reset_peak_memory(ctx.device)
    with tempfile.TemporaryDirectory() as out_dir, timed_batches(waits), \
            contextlib.redirect_stdout(io.StringIO()):
        train.train(model, run_args, ctx, out_dir=out_dir,
                    loss_fn=patch_loss_fn(patch_size) if patch else train.token_loss,
                    seq_len=patch_size * args.seq_len,
                    micro_batch=patch_micro_batch(run_args, ctx.world) if patch else None,
                    flops_per_token=flops_per_token)
        log = [json.loads(line) for line in open(os.path.join(out_dir, "log.jsonl"))]
    memory = peak_memory_mib(ctx.device)
    accum = len(waits) // len(log)  # next_micro calls per optimizer step
    # medians, not means: one slow step (a page fault, another process) does not move them
    step_s = [args.batch_tokens / row["tok_per_s"] for row in log][args.warmup:]
    wait_s = [sum(waits[i * accum:(i + 1) * accum]) for i in range(len(log))][args.warmup:]
    tok_per_s = args.batch_tokens / statistics.median(step_s)
    peak = train.peak_flops(ctx)
    return dict(tok_per_s=tok_per_s, ms_per_step=1000 * statistics.median(step_s),
                step_ms_min_max=[1000 * min(step_s), 1000 * max(step_s)],
                data_wait=sum(wait_s) / sum(step_s),
                peak_mib=memory, mfu=tok_per_s * flops_per_token / peak if peak else None,
                micro_batch=patch_micro_batch(run_args, ctx.world) if patch else args.micro_batch,
                row_tokens=patch_size * args.seq_len, flops_per_token=flops_per_token)


def time_eval(args, ctx, vocab_size, repeats=3):
    """train.evaluate over --eval_tokens validation tokens: median of `repeats` passes after one
    warm-up pass."""
    torch.manual_seed(args.seed)
    model = build_model(args, vocab_size).to(ctx.device)
    n_val = data.file_info(os.path.join(args.data_dir, "val.bin"))["n_tokens"]
    # the windows evaluate() reads: whole seq_len windows, the tail left out
    tokens = (min(args.eval_tokens, n_val) - 1) // args.seq_len * args.seq_len
    reset_peak_memory(ctx.device)
    seconds = []
    # the first pass warms the allocator and caches; the median leaves it out
    for _ in range(1 + repeats):
        t = time.perf_counter()
        train.evaluate(model, args, ctx)
        sync(ctx.device)
        seconds.append(time.perf_counter() - t)
    return dict(tok_per_s=tokens / statistics.median(seconds[1:]), tokens=tokens,
                peak_mib=peak_memory_mib(ctx.device))


def time_batches(args, seconds=1.0):
    """BatchStream alone: how many [micro_batch, seq_len + 1] batches per second it reads from
    train.bin."""
    tokens = data.read_tokens(os.path.join(args.data_dir, "train.bin"))
    accum = args.batch_tokens // (args.micro_batch * args.seq_len)
    stream = data.BatchStream(tokens, args.micro_batch, args.seq_len, accum=accum)
    for _ in range(10):  # touch the first pages: the row measures a warm page cache
        stream.next_micro()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        stream.next_micro()
        n += 1
    dt = time.perf_counter() - t0
    return dict(batches_per_s=n / dt, tok_per_s=n * args.micro_batch * args.seq_len / dt)


def time_prepare(args, procs):
    """data.py on a ~prepare_mb subset of the stdlib corpus (every n-th file), with 1 and with
    `procs` processes: tokenize() alone, prepare() with the data set's tokenizer, prepare() training
    a new BPE; and the BPE training alone, which is serial (one thread, for determinism)."""
    docs = data.stdlib_documents()[0]
    # every n-th file rather than the first ones: the subset mixes the library's parts
    stride = max(1, round(sum(map(len, docs)) / (args.prepare_mb * 1e6)))
    docs = docs[::stride]
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    meta = data.load_meta(args.data_dir)
    spec = meta["tokenizer"]
    if spec.endswith((".model", ".tiktoken")):  # a file of the data folder
        spec = str(Path(args.data_dir) / spec)
    vocab_size = meta["vocab_size"] if spec.endswith(".model") else 8192
    rows = {}
    # data.py's progress lines would interleave with the table
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        src = Path(tmp) / "src"
        src.mkdir()
        for k, doc in enumerate(docs):
            (src / f"{k:05d}.py").write_text(doc, encoding="utf-8", newline="")
        jobs = {"tokenize only": lambda n: data.tokenize(docs, spec, n, "bench"),
                "prepare, data set's tokenizer":
                    lambda n: data.prepare([str(src)], out_dir=tmp, name=f"given{n}",
                                           tokenizer=spec, num_proc=n),
                "prepare, training a BPE":
                    lambda n: data.prepare([str(src)], out_dir=tmp, name=f"bpe{n}",
                                           vocab_size=vocab_size, num_proc=n)}
        for name, job in jobs.items():
            seconds = {}
            for n in sorted({1, procs}):
                t = time.perf_counter()
                job(n)
                seconds[n] = time.perf_counter() - t
            rows[name] = dict(seconds=seconds, mb_per_s={n: mb / s for n, s in seconds.items()},
                              speedup=seconds[1] / seconds[procs])
        t = time.perf_counter()
        data.train_sentencepiece(docs, vocab_size)
        rows["of which BPE training (serial)"] = dict(seconds={1: time.perf_counter() - t})
    return dict(mb=mb, documents=len(docs), procs=procs, rows=rows)


# --- memory at scale (--parts memory): each figure is measured in processes of its own ----------
def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


def probe(kind, preset, folder=""):
    """One memory figure, in this process (started by memory_rows, under torchrun where it needs
    2); prints a JSON line. state: bytes of parameters + gradients + AdamW state per process after
    one step (tensors only: DDP's own gradient buckets come on top); build: peak RSS added by
    building and initialising the model under --fsdp, before any step; from_hf: peak RSS added by
    GPT.from_hf, then after reading every weight."""
    import torch.distributed as dist
    from model import GPT, GPTConfig
    world = int(os.environ.get("WORLD_SIZE", 1))
    ctx = train.Context(int(os.environ.get("RANK", 0)), world, 0, "cpu", torch.float32)
    if world > 1 or kind in ("state_fsdp", "build"):
        dist.init_process_group("gloo")
    cfg = GPTConfig.from_preset(preset, vocab_size=32000)
    # figures are relative to this baseline: the interpreter and torch themselves are not counted
    base, row = rss_mib(), {"kind": kind, "rank": ctx.rank, "preset": preset}
    reset_peak_memory("cpu")
    if kind == "from_hf":
        model = GPT.from_hf(folder)
        row["peak_mib"] = peak_memory_mib("cpu") - base
        # read every weight: each page of the mapped file becomes resident
        for p in model.parameters():
            p.sum()
        row["touched_mib"] = rss_mib() - base
        row["folder_mib"] = sum(f.stat().st_size for f in Path(folder).iterdir()) / 2**20
    elif kind == "build":
        model = train.shard(GPT.on_meta(cfg), ctx)
        row["peak_mib"] = peak_memory_mib("cpu") - base
        row["model_mib"] = model.num_params() * 4 / 2**20
    else:  # state_ddp / state_fsdp: one step of AdamW on a short random batch
        model = train.shard(GPT.on_meta(cfg), ctx) if kind == "state_fsdp" else GPT(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        batch = torch.randint(0, cfg.vocab_size, (1, 33))
        model(batch[:, :-1], batch[:, 1:])[1].backward()
        optimizer.step()  # AdamW allocates its two moments at the first step
        local = lambda t: t.to_local() if isinstance(t, train.DTensor) else t
        n_bytes = sum(local(p).numel() * p.element_size() for p in model.parameters())
        n_bytes += sum(local(p.grad).numel() * p.grad.element_size() for p in model.parameters())
        # tensors only: the scalar step counters are not state that grows with the model
        n_bytes += sum(local(v).numel() * v.element_size() for st in optimizer.state.values()
                       for v in st.values() if torch.is_tensor(v) and v.dim())
        row["state_mib"] = n_bytes / 2**20
        row["model_mib"] = model.num_params() * 4 / 2**20
    print("PROBE " + json.dumps(row), flush=True)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    os._exit(0)  # as train.cli: no gloo teardown at interpreter exit


def run_probe(kind, preset, world=1, folder=""):
    code = f"import bench; bench.probe({kind!r}, {preset!r}, {str(folder)!r})"
    # --no-python: torchrun starts the command as given, this interpreter with -c code
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={world}", "--no-python"] if world > 1 else [])
    # run beside this file, so that `import bench` finds it
    res = subprocess.run([*launcher, sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    rows = [json.loads(line[6:]) for line in res.stdout.splitlines() if line.startswith("PROBE ")]
    if res.returncode or not rows:
        raise RuntimeError(f"memory probe {kind} failed:\n{res.stderr[-2000:]}")
    return max(rows, key=lambda r: r.get("peak_mib", r.get("state_mib")))  # the worst process


def prepare_peak(gigabytes, tokenizer="gpt2"):
    """Peak RSS of data.py (and of its worker processes: the larger) preparing `gigabytes` of text,
    made of hard links to the stdlib's files (no copies on disk), with an existing tokenizer."""
    with tempfile.TemporaryDirectory() as tmp:
        files, size, k = data.stdlib_files(), 0, 0
        while size < gigabytes * 1e9:
            for i, f in enumerate(files):
                dst = Path(tmp, "corpus", f"{k:03d}", f"{i:05d}_{f.name}")
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, dst)  # gigabytes of input without gigabytes of disk
                size += f.stat().st_size
            k += 1
        t0 = time.time()
        cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "data.py"),
               "--input", str(Path(tmp, "corpus")), "--tokenizer", tokenizer,
               "--out_dir", str(Path(tmp, "out"))]
        # a fresh parent, so that its RUSAGE_CHILDREN peak is data.py's and its workers', not an
        # earlier probe's
        wrapper = ("import resource, subprocess, sys; "
                   "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                   "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
                   "sys.stderr.write(r.stderr); sys.exit(r.returncode)")
        res = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"data.py failed:\n{res.stderr[-2000:]}")
        return dict(text_gb=size / 1e9, files=sum(1 for _ in Path(tmp, "corpus").rglob("*.py")),
                    seconds=time.time() - t0, peak_mib=int(res.stdout.split()[-1]) / 1024)


def memory_rows(args):
    """--parts memory: sharded training state, building a big model, from_hf, data preparation."""
    out = {}
    for kind, preset in (("state_ddp", args.memory_state_preset),
                         ("state_fsdp", args.memory_state_preset),
                         ("build", args.memory_preset)):
        out[kind] = run_probe(kind, preset, world=2)
        print0(json.dumps(out[kind]))
    with tempfile.TemporaryDirectory() as tmp:
        from model import GPT, GPTConfig
        with torch.device("meta"):
            big = GPT(GPTConfig.from_preset(args.memory_preset, vocab_size=32000))
        big.to_empty(device="cpu")  # the values do not matter here, only the size of the folder
        big.save_hf(tmp)
        del big
        out["from_hf"] = run_probe("from_hf", args.memory_preset, folder=tmp)
        print0(json.dumps(out["from_hf"]))
    out["prepare"] = prepare_peak(args.memory_text_gb)
    return out


def memory_table(m):
    ddp, fsdp, build = m["state_ddp"], m["state_fsdp"], m["build"]
    hf, prep = m["from_hf"], m["prepare"]
    return "\n".join([
        f"memory per process, 2 processes (gloo, CPU):",
        f"  params + grads + AdamW state, {ddp['preset']}: DDP {ddp['state_mib']:,.0f} MiB, "
        f"--fsdp {fsdp['state_mib']:,.0f} MiB = {fsdp['state_mib'] / ddp['state_mib']:.3f}x",
        f"  building {build['preset']} under --fsdp (before the first step): "
        f"peak +{build['peak_mib']:,.0f} MiB = {build['peak_mib'] / build['model_mib']:.3f}x of "
        f"the whole fp32 model ({build['model_mib']:,.0f} MiB)",
        f"  GPT.from_hf of a {hf['folder_mib']:,.0f} MiB {hf['preset']} folder: "
        f"peak +{hf['peak_mib']:,.0f} MiB = {hf['peak_mib'] / hf['folder_mib']:.3f}x; "
        f"after reading every weight +{hf['touched_mib']:,.0f} MiB = "
        f"{hf['touched_mib'] / hf['folder_mib']:.3f}x (pages of the mapped file)",
        f"  data.py on {prep['text_gb']:.2f} GB of text ({prep['files']:,} files, --tokenizer "
        f"gpt2): peak RSS {prep['peak_mib']:,.0f} MiB in {prep['seconds']:.0f} s"])


# --- the script ----------------------------------------------------------------------------------
def modes_of(args, ctx):
    """[(label, dtype, compile)]: --modes, or what --dtype/--compile give plus bf16 + compile on
    CUDA."""
    if args.modes:
        labels = args.modes.split(",")
    else:
        labels = [("bf16" if ctx.dtype == torch.bfloat16 else "fp32")
                  + ("+compile" if args.compile else "")]
    if not args.modes and ctx.device.startswith("cuda") and "bf16+compile" not in labels:
        labels.append("bf16+compile")
    return [(label, DTYPES[label.split("+")[0]], label.endswith("+compile")) for label in labels]


def check_bench_args(args, ctx):
    """Every flag problem at once, in one line, before any work."""
    problems = []
    parts = args.parts.split(",")
    if not set(parts) <= {*PARTS, "memory"}:
        problems.append(f"--parts {args.parts}: choose from {','.join(PARTS)},memory")
    try:
        patch_sizes = [int(k) for k in args.patch_sizes.split(",")]
    except ValueError:
        patch_sizes = [0]  # reported just below, with the other problems
    if min(patch_sizes) < 2:
        problems.append(f"--patch_sizes {args.patch_sizes}: comma-separated integers >= 2")
    for k in patch_sizes if min(patch_sizes) >= 2 and args.seq_len > 0 else []:
        if args.batch_tokens % (k * args.seq_len):
            problems.append(f"--batch_tokens {args.batch_tokens} is not a multiple of K x seq_len "
                            f"= {k} x {args.seq_len}: patch rows must fill whole steps of the same "
                            "tokens")
    if args.steps < 1 or args.warmup < 1:
        problems.append(f"--steps {args.steps} and --warmup {args.warmup} must be >= 1 (the first "
                        "steps are never timed)")
    if args.prepare_mb <= 0:
        problems.append(f"--prepare_mb {args.prepare_mb} must be positive")
    for mode in args.modes.split(",") if args.modes else []:
        if mode not in ("fp32", "bf16", "fp32+compile", "bf16+compile"):
            problems.append(f"--modes {mode}: choose from fp32, bf16, fp32+compile, bf16+compile")
    if ctx.world > 1:
        problems.append("bench.py times one process; run it without torchrun")
    try:
        check_args(args, ctx)
    except UsageError as e:
        problems.append(str(e))
    if problems:
        raise UsageError("; ".join(problems))
    return parts, patch_sizes


def table(result):
    """The report: training rows, then eval, the batch iterator and data preparation."""
    c = result["config"]
    lines = [f"bench.py | {c['preset']} ({c['flavour']}, {c['params'] / 1e6:.2f}M params) | "
             f"seq_len {c['seq_len']} | {c['batch_tokens']:,} tokens/step | {c['device']}, "
             f"{c['threads']} threads, torch {c['torch']} | "
             f"median of {c['steps']} steps after {c['warmup']}"
             + (f" | load average {c['load_average'][0]:.1f} at start" if c["load_average"]
                else "")]
    if result["training"]:
        head = (f"{'run':<12} {'mode':<13} {'rows':>9} {'tok/s':>10} {'ms/step':>9} "
                f"{'x token':>8} {'data wait':>10} {'peak MiB':>9} {'MFU':>6}")
        lines += [head, "-" * len(head)]
        for r in result["training"]:
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
            ratio = f"{r['x_token']:.2f}x" if r.get("x_token") else "-"
            lines.append(f"{r['run']:<12} {r['mode']:<13} {r['micro_batch']:>3} x "
                         f"{r['row_tokens']:<4} {r['tok_per_s']:>10,.0f} "
                         f"{r['ms_per_step']:>9.1f} {ratio:>8} {100 * r['data_wait']:>9.3f}% "
                         f"{r['peak_mib']:>9.0f} {mfu:>6}")
    if "eval" in result:
        e = result["eval"]
        lines.append(f"eval: {e['tok_per_s']:,.0f} tok/s (forward only, {e['tokens']:,} tokens, "
                     f"peak {e['peak_mib']:.0f} MiB)")
    if "data" in result:
        d = result["data"]
        lines.append(f"BatchStream alone: {d['batches_per_s']:,.0f} batches/s of "
                     f"{c['micro_batch']} x {c['seq_len'] + 1} tokens = "
                     f"{d['tok_per_s'] / 1e6:,.1f}M tok/s")
    if "prepare" in result:
        p, n = result["prepare"], result["prepare"]["procs"]
        lines.append(f"data.py on {p['mb']:.1f} MB of stdlib text ({p['documents']} files): "
                     f"1 process vs {n}")
        for name, r in p["rows"].items():
            s = r["seconds"]
            if "speedup" in r:
                lines.append(f"  {name:<31} {s[1]:6.1f} s {r['mb_per_s'][1]:5.2f} MB/s | "
                             f"{s[n]:6.1f} s {r['mb_per_s'][n]:5.2f} MB/s | {r['speedup']:.2f}x")
            else:
                lines.append(f"  {name:<31} {s[1]:6.1f} s")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = parser.add_argument_group("benchmark")
    g.add_argument("--parts", default=",".join(PARTS),
                   help=f"what to measure, comma-separated from {','.join(PARTS)}")
    g.add_argument("--patch_sizes", default="2,4,8",
                   help="the K of the patch-level rows, comma-separated")
    g.add_argument("--steps", type=int, default=8,
                   help="timed optimizer steps per training row (the median is reported)")
    g.add_argument("--warmup", type=int, default=2,
                   help="untimed optimizer steps before them (allocator, caches, compile)")
    g.add_argument("--modes", default="",
                   help="training variants, comma-separated from fp32, bf16, fp32+compile, "
                        "bf16+compile (default: what --dtype/--compile give, plus bf16+compile on "
                        "CUDA)")
    g.add_argument("--prepare_mb", type=float, default=4.0,
                   help="MB of stdlib text for the data.py preparation rows")
    g.add_argument("--out_json", default="",
                   help="write the results here as JSON (default: <out_dir>/bench.json)")
    g.add_argument("--memory_preset", default="tinyllama-1.1b",
                   help="--parts memory: the model built under --fsdp and loaded by from_hf")
    g.add_argument("--memory_state_preset", default="llama-370m",
                   help="--parts memory: the model whose training state is compared, DDP vs "
                        "--fsdp (each DDP process holds 16 bytes per parameter)")
    g.add_argument("--memory_text_gb", type=float, default=2.0,
                   help="--parts memory: GB of text data.py prepares")
    add_train_args(parser)
    alias(parser, "--out_json", "--json")  # the old name keeps working
    # pinned here, so that bench rows stay comparable if train.py's defaults change
    parser.set_defaults(batch_tokens=8192, eval_tokens=32768)
    args = parser.parse_args()
    ctx = setup(args)
    # each row runs a fixed --warmup + --steps steps into a temporary folder, evaluating and
    # checkpointing never
    ignored = given_flags(parser, {"resume", "max_tokens", "max_steps", "eval_every", "log_every",
                                   "ckpt_every"})
    if ignored:
        raise UsageError(f"{' and '.join(ignored)}: not used by bench.py, which times --warmup + "
                         "--steps steps per row (use --steps)")
    parts, patch_sizes = check_bench_args(args, ctx)
    meta = data.load_meta(args.data_dir)
    torch.manual_seed(args.seed)
    model = build_model(args, meta["vocab_size"])
    check_seq_len(args, model)
    # a too-short train.bin fails now, not after the first rows
    data.BatchStream(data.read_tokens(os.path.join(args.data_dir, "train.bin"),
                                      vocab_size=meta["vocab_size"]),
                     args.micro_batch, max(patch_sizes) * args.seq_len)
    if "prepare" in parts:
        # the preparation rows re-tokenize with it: fail now if it cannot load
        data.load_tokenizer(args.data_dir)
    print0(json.dumps(vars(args)))
    if ctx.device.startswith("cuda"):
        device = torch.cuda.get_device_name(ctx.device)
    else:
        device = f"cpu ({platform.processor() or platform.machine()})"
    config = dict(preset=args.preset, flavour=model.config.flavour, params=model.num_params(),
                  seq_len=args.seq_len, batch_tokens=args.batch_tokens,
                  micro_batch=args.micro_batch, steps=args.steps, warmup=args.warmup,
                  device=device, threads=torch.get_num_threads(), cpus=os.cpu_count(),
                  torch=torch.__version__, python=platform.python_version(),
                  # other work on the machine skews timings: the report says how busy it was
                  load_average=os.getloadavg() if hasattr(os, "getloadavg") else None)
    result = dict(config=config, args=vars(args), training=[])
    # first: its worker processes fork a process that has not yet run torch's thread pool
    if "prepare" in parts:
        print0("timing data.py preparation ...")
        result["prepare"] = time_prepare(args, os.cpu_count() or 1)
    for label, dtype, compile_ in modes_of(args, ctx):
        # this mode's copies; args and ctx stay as they are for the eval and data rows
        mode_args, mode_ctx = with_args(args, compile=compile_), replace(ctx, dtype=dtype)
        token = None  # the patch rows of a mode compare with its token row
        for k in ([1] if "token" in parts else []) + (patch_sizes if "patch" in parts else []):
            name = "token" if k == 1 else f"patch K={k}"
            print0(f"timing {name} ({label}) ...")
            row = dict(run=name, mode=label, patch_size=k,
                       **time_training(mode_args, mode_ctx, meta["vocab_size"], k))
            token = row if k == 1 else token
            row["x_token"] = row["tok_per_s"] / token["tok_per_s"] if token else None
            result["training"].append(row)
    if "eval" in parts:
        print0("timing evaluation ...")
        result["eval"] = time_eval(args, ctx, meta["vocab_size"])
    if "data" in parts:
        result["data"] = time_batches(args)
    print0(table(result))
    if "memory" in parts:
        print0("measuring memory (processes of their own) ...")
        result["memory"] = memory_rows(args)
        print0(memory_table(result["memory"]))
    path = args.out_json or os.path.join(args.out_dir, "bench.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # temp file + rename: an interrupted run never leaves a half-written bench.json
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
    print0(f"wrote {path}")


if __name__ == "__main__":
    cli(main)
