"""The test suite: `python -m pytest -q test_all.py` (CPU, a few minutes on 2 cores).

Tests assert numbers: logits against `transformers` references, losses that must fall, runs that must
match bit for bit after a kill, files that must be byte-identical."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent
_cache = ROOT.parent / "shared" / "data" / "tiktoken_cache"
if _cache.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_cache))

import data  # noqa: E402
import train  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402


def run(script, *flags, torchrun=0, check=True, **popen):
    """Run a repository script in a subprocess; torchrun=N uses N processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] if torchrun else [sys.executable]
    res = subprocess.run(cmd + [str(ROOT / script), *map(str, flags)], capture_output=True, text=True, cwd=ROOT, **popen)
    if check and res.returncode != 0:
        raise AssertionError(f"{script} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def read_log(out_dir):
    return [json.loads(line) for line in open(Path(out_dir) / "log.jsonl")]


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    """A learnable synthetic corpus (noisy counting sequences) as token files with headers."""
    d = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    stream = (np.arange(400_000) * 7 + rng.integers(0, 3, 400_000)) % 120 + 8
    data.write_tokens(d / "train.bin", stream[:360_000].astype(np.uint16), 128, 720_000, 0)
    data.write_tokens(d / "val.bin", stream[360_000:].astype(np.uint16), 128, 80_000, 0)
    (d / "meta.json").write_text(json.dumps({"name": "toy", "vocab_size": 128, "tokenizer": "none", "eot_id": 0}))
    return d


TINY = ["--preset", "nano", "--seq_len", "64", "--batch_tokens", "2048", "--micro_batch", "8", "--eval_tokens", "4096",
        "--log_every", "2", "--eval_every", "10", "--ckpt_every", "4"]


# --- model -----------------------------------------------------------------------------------------------
def test_param_counts_and_flops():
    gpt2 = GPT(GPTConfig.from_preset("gpt2"))
    assert gpt2.num_params() == 124_439_808  # Hugging Face's GPT-2 small, tied head
    assert gpt2.num_params(embeddings=False) == 124_439_808 - 50257 * 768 - 1024 * 768
    n_matmul = gpt2.num_params(embeddings=False) + 50257 * 768
    assert gpt2.flops_per_token(1024) == 6 * n_matmul + 12 * 12 * 768 * 1024


def test_presets_and_errors():
    cfg = GPTConfig.from_preset("6L2048H")
    assert (cfg.n_layer, cfg.n_embd, cfg.flavour, cfg.head_dim) == (6, 2048, "llama", 128)
    assert GPTConfig.from_preset("llama-370m").ffn_hidden == 2752
    with pytest.raises(ValueError, match="did you mean 'tiny'"):
        GPTConfig.from_preset("tiyn")


@pytest.mark.parametrize("flavour", ["gpt2", "llama"])
def test_body_takes_embeddings_and_positions(flavour):
    torch.manual_seed(0)
    model = GPT(GPTConfig(flavour=flavour, vocab_size=50, n_layer=2, n_head=2, n_embd=32, block_size=64)).eval()
    idx = torch.randint(0, 50, (2, 10))
    logits, _ = model(idx)
    torch.testing.assert_close(logits, model.lm_head(model.body(model.wte(idx))))
    shifted = model.body(model.wte(idx), torch.arange(5, 15))
    if flavour == "llama":  # rotary attention only sees relative positions
        torch.testing.assert_close(shifted, model.body(model.wte(idx)), atol=1e-5, rtol=1e-5)
    else:  # learned absolute positions do change the output
        assert not torch.allclose(shifted, model.body(model.wte(idx)))


def test_generate_greedy_is_deterministic_and_topk_restricts():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("nano", vocab_size=40)).eval()
    idx = torch.zeros(1, 3, dtype=torch.long)
    a, b = model.generate(idx, 8, temperature=0), model.generate(idx, 8, temperature=0)
    assert a.shape == (1, 11) and torch.equal(a, b)
    top1 = model.generate(idx, 8, temperature=1.0, top_k=1)
    assert torch.equal(top1, a)  # top-1 sampling is greedy


def _hf_models():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    yield "gpt2", transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=96, n_positions=64, n_embd=48, n_layer=2, n_head=4))
    for tie, kv in ((False, 2), (True, 4)):
        cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=kv, max_position_embeddings=64,
                                       tie_word_embeddings=tie, rope_theta=500.0)
        yield f"llama-tie{tie}-kv{kv}", transformers.LlamaForCausalLM(cfg)


@pytest.mark.parametrize("case", [0, 1, 2])
def test_hf_import_export_matches_transformers(case, tmp_path):
    transformers = pytest.importorskip("transformers")
    name, hf = list(_hf_models())[case]
    hf = hf.eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = GPT.from_hf(tmp_path / "hf").eval()
    idx = torch.randint(0, 96, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=1e-4, rtol=0)
        ours.save_hf(tmp_path / "ours")
        back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
        torch.testing.assert_close(back(idx).logits, hf(idx).logits, atol=1e-4, rtol=0)
    again = GPT.from_hf(tmp_path / "ours")  # and our own export reads back
    torch.testing.assert_close(again(idx)[0], ours(idx)[0])


def test_hf_shape_mismatch_is_named(tmp_path):
    GPT(GPTConfig(vocab_size=50, n_layer=1, n_head=2, n_embd=16, block_size=32)).save_hf(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["n_embd"] = 32
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"wte.weight has shape \(50, 16\), expected \(50, 32\)"):
        GPT.from_hf(tmp_path)


# --- train.py --------------------------------------------------------------------------------------------
def test_lr_schedule():
    lrs = [train.get_lr(s, 100, 1.0, 0.1, 10) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[100] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert train.get_lr(50, 100, 1.0, 0.1, 10, "constant") == 1.0


def test_training_lowers_the_loss(toy_data, tmp_path):
    run("train.py", "--data_dir", toy_data, "--out_dir", tmp_path, "--max_steps", 30, *TINY)
    log = read_log(tmp_path)
    assert log[-1]["val_loss"] < np.log(128) - 1.2  # uniform guessing scores ln 128 = 4.85
    assert log[-1]["loss"] < log[0]["loss"] - 1.0
    ckpt = json.loads((tmp_path / "ckpt.json").read_text())
    assert ckpt["done"] and ckpt["step"] == 30 and ckpt["data"]["position"] == 30 * 2048


def test_two_process_ddp_matches_one_process(toy_data, tmp_path):
    flags = ["--data_dir", toy_data, "--max_steps", 8, *TINY]
    run("train.py", "--out_dir", tmp_path / "one", *flags)
    run("train.py", "--out_dir", tmp_path / "two", *flags, torchrun=2)
    one, two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], abs=2e-4)
    assert one[-1]["val_loss"] == pytest.approx(two[-1]["val_loss"], abs=2e-4)


def test_kill_then_resume_matches_unbroken_run(toy_data, tmp_path):
    flags = ["--data_dir", toy_data, "--max_steps", 24, *TINY, "--ckpt_every", 2]
    run("train.py", "--out_dir", tmp_path / "whole", *flags)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--out_dir", str(out), *map(str, flags)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill mid-run, once at least one checkpoint exists
        try:
            if json.loads((out / "ckpt.json").read_text())["step"] >= 6:
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not json.loads((out / "ckpt.json").read_text())["done"], "the run ended before it was killed"
    run("train.py", "--out_dir", out, *flags, "--resume")
    whole, resumed = read_log(tmp_path / "whole"), read_log(out)
    assert resumed[-1]["step"] == 24 and resumed[-1]["loss"] == whole[-1]["loss"]
    assert resumed[-1]["val_loss"] == whole[-1]["val_loss"]


def test_bad_input_is_one_clear_line(toy_data, tmp_path):
    bad_header = tmp_path / "badheader"
    bad_header.mkdir()
    (bad_header / "meta.json").write_text(json.dumps({"vocab_size": 128}))
    (bad_header / "train.bin").write_bytes(b"\x00" * 4096)
    (bad_header / "val.bin").write_bytes(b"\x00" * 4096)
    other_vocab = tmp_path / "other"
    other_vocab.mkdir()
    GPT(GPTConfig.from_preset("nano", vocab_size=64)).save_hf(other_vocab)
    base = ["--data_dir", toy_data, "--out_dir", tmp_path / "o", "--max_steps", 2]
    cases = {
        "missing data dir": (["--data_dir", tmp_path / "nope", "--out_dir", tmp_path / "o"], "data.py"),
        "empty data dir": (["--data_dir", tmp_path, "--out_dir", tmp_path / "o"], "meta.json"),
        "wrong header": (["--data_dir", bad_header, "--out_dir", tmp_path / "o"], "header"),
        "vocab mismatch": (base + ["--init_from", other_vocab], "vocabulary 64"),
        "batch not divisible": (base + ["--batch_tokens", 1000], "not divisible"),
        "unknown preset": (base + ["--preset", "tiyn"], "did you mean 'tiny'"),
        "seq_len too long": (base + ["--preset", "nano", "--seq_len", 4096, "--batch_tokens", 65536], "block_size"),
    }
    for name, (flags, expected) in cases.items():
        res = run("train.py", *flags, check=False)
        lines = res.stderr.strip().splitlines()
        assert res.returncode != 0, name
        assert "Traceback" not in res.stderr and len(lines) == 1, f"{name}: {res.stderr}"
        assert expected in lines[0], f"{name}: {lines[0]}"
