"""The test suite: `python -m pytest -q test_all.py` (CPU, a few minutes on 2 cores).

Tests assert numbers: logits against `transformers` references, losses that must fall, runs that must
match bit for bit after a kill, files that must be byte-identical."""
import base64
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
from data import (BatchStream, DataError, Tokenizer, eval_windows, file_info, load_meta, load_tokenizer,  # noqa: E402
                  prepare, random_batch, read_documents, read_tokens, train_sentencepiece, write_tokens)
import train  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import patch_train  # noqa: E402
from patch_train import patch_loss  # noqa: E402


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


# --- data.py ---------------------------------------------------------------------------------------------
TRICKY = ("def f(x):\n\treturn  x  # a tab, two spaces\n\n        deep\t\ttabs\r\nwindows line\r\n"
          "unicode: ünïcødé 日本語 🙂 e\u0301 \u3000ideographic space \x00 nul \u2028\n"
          "sentencepiece's own ▁ symbol, ▁▁ twice, and ' ▁ ' \n   trailing spaces   ")
WORDS = ("self return value index data list dict None True False import from class def yield lambda "
         "tokens batch model layer stack patch loss grad step print format string number").split()


def make_corpus(folder, n_docs=40, seed=0):
    """n_docs small Python-like files with indentation, tabs and some non-ASCII, one document each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    docs = []
    for d in range(n_docs):
        lines = [f"def {rng.choice(WORDS)}_{d}({rng.choice(WORDS)}, {rng.choice(WORDS)}):"]
        for _ in range(int(rng.integers(5, 25))):
            indent = rng.choice(["    ", "        ", "\t", ""])
            words = " ".join(rng.choice(WORDS, int(rng.integers(1, 7))))
            lines.append(f"{indent}{words} = {int(rng.integers(0, 1000))}  # ünï {rng.choice(WORDS)}")
        docs.append("\n".join(lines) + "\n")
        (folder / f"doc_{d:03d}.py").write_text(docs[-1], encoding="utf-8")
    (folder / "empty.py").write_text("")  # skipped, not an error
    (folder / "binary.bin").write_bytes(b"\xff\xfe\x00bad utf-8")  # skipped as not UTF-8
    return docs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The same corpus prepared with 1 and with 2 tokenizing processes."""
    root = tmp_path_factory.mktemp("prep")
    docs = make_corpus(root / "corpus")
    metas = {n: prepare([str(root / "corpus")], out_dir=str(root / "out"), name=f"p{n}", vocab_size=400,
                        val_fraction=0.2, num_proc=n) for n in (1, 2)}
    return root / "out", docs, metas


def gpt2_or_skip():
    try:
        return Tokenizer("gpt2")
    except DataError as e:
        pytest.skip(f"gpt2 files not available offline: {e}")


# -----------------------------------------------------------------------------
# tokenizers

def test_trained_sentencepiece_round_trips_any_text(prepared):
    out, _, _ = prepared
    tok = load_tokenizer(out / "p1")
    assert tok.vocab_size == 400 and tok.eot_id == 1 and tok.name.endswith("tokenizer.model")
    for text in [TRICKY, "", "x", " leading space", "\n\n\n", "    ", "▁", "a▁b", "\t"]:
        assert tok.decode(tok.encode(text)) == text, repr(text)
    assert tok._sp.id_to_piece(tok.encode("\n")) == ["\n"]  # newline is a piece of its own, not the byte <0x0A>
    assert tok._sp.id_to_piece(tok.encode("x")) == ["x"]  # no dummy '▁' put in front of the text
    assert tok.eot_id not in tok.encode(TRICKY)
    assert tok.decode(torch.tensor(tok.encode("def f"))) == "def f"  # tensors decode too


def test_sentencepiece_training_is_deterministic_and_checks_vocab_size():
    docs = ["alpha beta gamma\n\tdelta  epsilon\n" * 3, "zeta eta theta iota\n    kappa\n" * 3]
    assert train_sentencepiece(docs, 300) == train_sentencepiece(docs, 300)
    with pytest.raises(DataError, match="vocab_size 5000"):
        train_sentencepiece(docs, 5000)  # far more pieces than this text has


def test_gpt2_round_trip_and_fingerprint(tmp_path):
    tok = gpt2_or_skip()
    assert (tok.vocab_size, tok.eot_id) == (50257, 50256)
    assert tok.decode(tok.encode(TRICKY)) == TRICKY
    assert tok.encode("<|endoftext|>") != [50256]  # ordinary text, never the special token
    # the same ranks from a .tiktoken file: same ids, same fingerprint
    lines = [f"{base64.b64encode(tok._tt.decode_single_token_bytes(i)).decode()} {i}" for i in range(50256)]
    (tmp_path / "gpt2.tiktoken").write_text("\n".join(lines) + "\n")
    from_file = Tokenizer(str(tmp_path / "gpt2.tiktoken"))
    assert (from_file.vocab_size, from_file.eot_id) == (50257, 50256)
    assert from_file.encode(TRICKY) == tok.encode(TRICKY)
    assert from_file.fingerprint == tok.fingerprint == Tokenizer("gpt2").fingerprint


def test_cli_in_a_new_process_reuses_a_tokenizer_with_the_same_fingerprint(prepared, tmp_path):
    """The fingerprint is computed afresh in another process (no per-process hash seeds) and the file is copied."""
    out, _, _ = prepared
    model = out / "p1" / "tokenizer.model"
    r = subprocess.run([sys.executable, str(Path(data.__file__)), "--input", str(out.parent / "corpus"),
                        "--tokenizer", str(model), "--out_dir", str(tmp_path), "--name", "again",
                        "--val_fraction", "0.2", "--num_proc", "1"], capture_output=True, text=True, check=True)
    assert "train.bin" in r.stdout and "tokens/byte" in r.stdout
    here, meta = Tokenizer(str(model)).fingerprint, load_meta(tmp_path / "again")
    assert 0 <= here < 2 ** 63 and meta["fingerprint"] == here == load_meta(out / "p1")["fingerprint"]
    assert (meta["tokenizer"], meta["args"]["tokenizer"]) == ("tokenizer.model", str(model))
    assert (tmp_path / "again" / "tokenizer.model").read_bytes() == model.read_bytes()
    assert (tmp_path / "again" / "train.bin").read_bytes() == (out / "p1" / "train.bin").read_bytes()


def test_unknown_tokenizer_names_the_valid_kinds(tmp_path):
    with pytest.raises(DataError, match=r"unknown tokenizer 'bert'.*gpt2.*\.tiktoken.*\.model"):
        Tokenizer("bert")
    with pytest.raises(DataError, match="does not exist"):
        Tokenizer(str(tmp_path / "missing.model"))


# -----------------------------------------------------------------------------
# token files

@pytest.mark.parametrize("vocab_size, itemsize", [(50257, 2), (65536, 2), (70000, 4)])
def test_token_file_round_trip(tmp_path, vocab_size, itemsize):
    tokens = np.random.default_rng(0).integers(0, vocab_size, 1001)
    tokens[:2] = [0, vocab_size - 1]
    path = tmp_path / "t.bin"
    write_tokens(path, tokens, vocab_size, n_bytes=4321, fingerprint=2 ** 62 + 5)
    assert path.stat().st_size == data.HEADER_BYTES + 1001 * itemsize
    back = read_tokens(path, vocab_size=vocab_size, fingerprint=2 ** 62 + 5)
    assert back.dtype.itemsize == itemsize and np.array_equal(back, tokens)
    info = file_info(path)
    assert (info["vocab_size"], info["n_tokens"], info["n_bytes"], info["fingerprint"]) == (vocab_size, 1001, 4321,
                                                                                            2 ** 62 + 5)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed, not left behind


def test_token_file_errors(tmp_path):
    path = tmp_path / "t.bin"
    with pytest.raises(DataError, match=r"t\.bin.*python data\.py"):
        read_tokens(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="0 bytes, too short"):
        read_tokens(path)
    write_tokens(path, np.arange(100), 50257, 100, 7)
    mismatch = "token file vocabulary 50257 does not match the model/tokenizer vocabulary 8192"
    with pytest.raises(DataError, match=mismatch):
        read_tokens(path, vocab_size=8192)
    with pytest.raises(DataError, match="fingerprint 7 does not match 8"):
        read_tokens(path, fingerprint=8)
    raw = path.read_bytes()
    path.write_bytes(raw[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_tokens(path)
    path.write_bytes(b"\x01" * 8 + raw[8:])
    with pytest.raises(DataError, match="magic"):
        read_tokens(path)
    with pytest.raises(DataError, match=r"ids 5\.\.100 do not fit the vocabulary 0\.\.99"):
        write_tokens(path, np.array([5, 100]), 100, 2, 0)


# -----------------------------------------------------------------------------
# prepare

def split_documents(tokens, eot_id, tok):
    """Decode a token file back into its documents: each one starts with the separator."""
    tokens = np.asarray(tokens, dtype=np.int64)
    starts = np.flatnonzero(tokens == eot_id)
    assert starts[0] == 0
    return [tok.decode(tokens[a + 1:b]) for a, b in zip(starts, [*starts[1:], len(tokens)])]


def test_prepare_same_bytes_for_any_num_proc(prepared):
    out, _, metas = prepared
    for f in ["train.bin", "val.bin", "tokenizer.model"]:
        assert (out / "p1" / f).read_bytes() == (out / "p2" / f).read_bytes(), f
    drop_args = [{k: v for k, v in m.items() if k not in ("args", "name")} for m in metas.values()]
    assert drop_args[0] == drop_args[1]


def test_prepare_splits_by_document(prepared):
    out, docs, metas = prepared
    meta, tok = load_meta(out / "p1"), load_tokenizer(out / "p1")
    assert meta == json.loads(json.dumps(metas[1])) and meta["tokenizer"] == "tokenizer.model"
    assert (meta["train"]["documents"], meta["val"]["documents"]) == (32, 8)  # 40 non-empty documents, 20% held out
    seen = {}
    for split in ("train", "val"):
        tokens = read_tokens(out / "p1" / f"{split}.bin", vocab_size=tok.vocab_size, fingerprint=tok.fingerprint)
        info = file_info(out / "p1" / f"{split}.bin")
        assert meta[split]["tokens"] == len(tokens) == info["n_tokens"]
        assert (out / "p1" / f"{split}.bin").stat().st_size == data.HEADER_BYTES + 2 * len(tokens)
        seen[split] = split_documents(tokens, tok.eot_id, tok)
        n_bytes = sum(len(d.encode("utf-8")) for d in seen[split])
        assert meta[split]["bytes"] == info["n_bytes"] == n_bytes
        assert meta[split]["documents"] == len(seen[split])
    assert not set(seen["train"]) & set(seen["val"])
    assert sorted(seen["train"] + seen["val"]) == sorted(docs)  # every document once, losslessly


def test_prepare_with_gpt2_jsonl_and_txt(tmp_path):
    gpt2_or_skip()
    rows = [{"text": f"story {i}: once upon a time\n", "id": i} for i in range(6)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "b.txt").write_text("first tale<|endoftext|>\nsecond tale\n<|endoftext|>\nthird\n")
    docs, skipped = read_documents([str(tmp_path / "*.jsonl"), str(tmp_path / "b.txt")])
    assert docs == [r["text"] for r in rows] + ["first tale", "second tale", "third"] and skipped == 0
    meta = prepare([str(tmp_path / "a.jsonl"), str(tmp_path / "b.txt")], out_dir=str(tmp_path / "out"),
                   name="g", tokenizer="gpt2", val_fraction=0.25, num_proc=1)
    assert (meta["vocab_size"], meta["eot_id"], meta["dtype"], meta["tokenizer"]) == (50257, 50256, "uint16", "gpt2")
    assert meta["train"]["documents"] + meta["val"]["documents"] == 9 and meta["val"]["documents"] == 2
    assert not (tmp_path / "out" / "g" / "tokenizer.model").exists()
    with pytest.raises(DataError, match=r"a\.jsonl:1: no text field 'body' \(found: text, id\)"):
        read_documents([str(tmp_path / "a.jsonl")], text_field="body")


def test_prepare_bad_inputs_raise_one_line(tmp_path):
    make_corpus(tmp_path / "c", n_docs=3)
    (tmp_path / "void").mkdir()
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("")
    (tmp_path / "blank" / "b.txt").write_text("")
    cases = [(dict(inputs=[str(tmp_path / "nope")]), "nope: no such file"),
             (dict(inputs=[str(tmp_path / "void")]), "0 non-empty documents"),
             (dict(inputs=[str(tmp_path / "blank")]), r"0 non-empty documents \(2 empty"),
             (dict(vocab_size=100), "--vocab_size 100 must lie in"),
             (dict(val_fraction=0.0), "--val_fraction 0.0"),
             (dict(val_fraction=1.5, num_proc=0), "--val_fraction 1.5.*--num_proc 0"),  # all problems at once
             (dict(inputs=[str(tmp_path / "c")], tokenizer="nonsense"), "unknown tokenizer 'nonsense'")]
    for kwargs, message in cases:
        with pytest.raises(DataError, match=message) as e:
            prepare(out_dir=str(tmp_path / "out"), **kwargs)
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match=r"meta\.json: not found.*python data\.py"):
        load_meta(tmp_path / "out" / "never")


def test_cli_reports_one_line_and_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["data.py", "--input", str(tmp_path / "missing"), "--out_dir", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        data.main()
    # sys.exit with a string prints it to stderr and exits with status 1
    assert isinstance(e.value.code, str) and "\n" not in e.value.code
    assert e.value.code.startswith("data.py: error: --input") and "missing: no such file" in e.value.code


# -----------------------------------------------------------------------------
# batches

def global_batch(streams, accum):
    """The rows of one optimizer step, in row order: micro-step by micro-step, rank by rank."""
    return torch.cat([s.next_micro() for _ in range(accum) for s in streams])


@pytest.mark.parametrize("world, accum, micro_rows", [(2, 1, 2), (1, 2, 2), (2, 2, 1), (4, 1, 1), (1, 1, 4)])
def test_batch_stream_reads_the_same_global_batch_for_any_split(world, accum, micro_rows):
    tokens, seq_len = np.arange(1000, dtype=np.uint16), 7
    streams = [BatchStream(tokens, micro_rows, seq_len, rank=r, world=world, accum=accum) for r in range(world)]
    for step in range(5):
        batch = global_batch(streams, accum)
        position = step * 4 * seq_len
        expected = torch.stack([torch.arange(position + j * seq_len, position + j * seq_len + seq_len + 1)
                                for j in range(4)])
        assert batch.dtype == torch.int64 and torch.equal(batch, expected)
        assert all(s.position == position + 4 * seq_len for s in streams)


def test_batch_stream_resumes_and_wraps(tmp_path):
    path = tmp_path / "t.bin"
    write_tokens(path, np.arange(100) % 97, 100, 100, 0)
    tokens = read_tokens(path)
    stream = BatchStream(tokens, micro_rows=2, seq_len=10)  # 21 tokens a batch: positions 0, 20, 40, 60, then wrap
    first = stream.next_micro()
    for _ in range(2):
        stream.next_micro()
    state = json.loads(json.dumps(stream.state_dict()))
    assert state == {"position": 60, "epoch": 0}
    expected = [stream.next_micro() for _ in range(3)]
    resumed = BatchStream(tokens, micro_rows=2, seq_len=10)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, resumed.next_micro()) for a in expected)
    assert (resumed.position, resumed.epoch) == (stream.position, stream.epoch) == (40, 1)
    assert torch.equal(expected[1], first)  # after the wrap the file starts again


def test_batch_stream_too_small_file(tmp_path):
    path = tmp_path / "small.bin"
    write_tokens(path, np.arange(20), 100, 20, 0)
    with pytest.raises(DataError, match=r"small\.bin: 20 tokens, fewer than one global batch of 4 rows x 10 \+ 1"
                                        r" needs \(41\)"):
        BatchStream(read_tokens(path), micro_rows=2, seq_len=10, world=2)


@pytest.mark.parametrize("max_tokens", [1000, 250, 10 ** 9])
def test_eval_windows_union_is_the_same_for_any_world(max_tokens):
    tokens, seq_len = np.arange(700, dtype=np.uint16), 16
    def rows(world):
        got = [tuple(row.tolist()) for r in range(world) for b in eval_windows(tokens, 3, seq_len, max_tokens, r, world)
               for row in b]
        return sorted(got)
    one = rows(1)
    n = (min(max_tokens, 700) - 1) // seq_len
    assert one == [tuple(range(w * seq_len, w * seq_len + seq_len + 1)) for w in range(n)]
    assert rows(2) == one and rows(3) == one
    assert next(eval_windows(tokens, 3, seq_len, max_tokens)).dtype == torch.int64


def test_random_batch_is_windows_and_repeatable():
    tokens = np.arange(50, dtype=np.uint16)
    batch = random_batch(tokens, 1000, 9, torch.Generator().manual_seed(0))
    assert batch.shape == (1000, 10) and batch.dtype == torch.int64
    assert torch.equal(batch[:, 1:] - batch[:, :-1], torch.ones(1000, 9, dtype=torch.int64))
    assert batch.max() == 49 and batch.min() == 0  # both ends of the file are reachable
    assert torch.equal(batch, random_batch(tokens, 1000, 9, torch.Generator().manual_seed(0)))
    with pytest.raises(DataError, match="fewer than one window"):
        random_batch(tokens, 1, 50, torch.Generator())


# --- patch_train.py --------------------------------------------------------------------------------------
def small_model(flavour, tie=True):
    torch.manual_seed(0)
    if flavour == "llama":
        cfg = GPTConfig.from_preset("nano", vocab_size=97, n_embd=32, block_size=16, tie_embeddings=tie)
    else:
        cfg = GPTConfig.from_preset("tiny-gpt2", vocab_size=97, n_layer=2, n_head=2, n_embd=32, block_size=16)
    return GPT(cfg).eval()


# --- the loss ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", ["llama", "gpt2"])
def test_patch_size_one_is_cross_entropy(flavour):
    model = small_model(flavour)
    idx = torch.randint(0, 97, (3, 16))
    _, expected = model(idx[:, :-1], idx[:, 1:])
    assert torch.equal(patch_loss(model, idx, 1), expected)


def paper_formula(model, idx, K):
    """Eq. 2 written out literally: for each patch i, run the model on the mean embeddings of patches 0..i
    alone (no causal mask needed) and score each of the K tokens of patch i+1 with the last output."""
    B, T = idx.shape[0], idx.shape[1] // K
    total = 0.0
    for b in range(B):
        for i in range(T - 1):
            prefix = torch.stack([model.wte(idx[b, j * K:(j + 1) * K]).mean(0) for j in range(i + 1)])
            out = model.body(prefix[None], torch.arange(i + 1))[0, -1]
            log_p = F.log_softmax(model.lm_head(out).float(), dim=-1)
            total = total - sum(log_p[idx[b, (i + 1) * K + k]] for k in range(K))
    return total / (B * (T - 1) * K)


@pytest.mark.parametrize("flavour,K", [("llama", 2), ("llama", 4), ("gpt2", 4)])
def test_patch_loss_matches_paper_formula(flavour, K):
    model = small_model(flavour, tie=False)
    idx = torch.randint(0, 97, (2, 6 * K))
    torch.testing.assert_close(patch_loss(model, idx, K), paper_formula(model, idx, K), rtol=1e-5, atol=1e-5)


def test_next_patch_is_a_bag_of_tokens():
    model = small_model("llama")
    idx = torch.randint(0, 97, (2, 24))
    shuffled = idx.view(2, 6, 4)[:, :, torch.randperm(4)].reshape(2, 24)  # reorder tokens inside each patch
    torch.testing.assert_close(patch_loss(model, shuffled, 4), patch_loss(model, idx, 4))


def test_gradients_reach_embeddings():
    model = small_model("llama", tie=False)  # untied: the input embedding is wte's only path to the loss
    K, T = 4, 4
    idx = torch.randint(0, 48, (2, K * T))   # ids 48.. never occur
    patch_loss(model, idx, K).backward()
    grad = model.wte.weight.grad.norm(dim=1)
    assert (grad[idx[:, :-K].unique()] > 0).all()  # every token of patches 0..T-2 (the last predicts nothing)
    assert (grad[48:] == 0).all() and model.lm_head.weight.grad.norm() > 0


def test_cost_split():
    assert patch_train.relative_compute(4, 2 / 3) == pytest.approx(0.5)
    assert patch_train.patch_phase_tokens(30 * 1024, 2 / 3, 1024) == (20 * 1024, 10 * 1024)


# --- the script ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def toy_data_patch(tmp_path_factory):
    """Noisy counting sequences (learnable), and a corpus whose token i is i, to see which data a phase read."""
    d = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    stream = (np.arange(200_000) * 7 + rng.integers(0, 3, 200_000)) % 120 + 8
    data.write_tokens(d / "train.bin", stream[:180_000].astype(np.uint16), 128, 360_000, 0)
    data.write_tokens(d / "val.bin", stream[180_000:].astype(np.uint16), 128, 40_000, 0)
    (d / "meta.json").write_text(json.dumps({"name": "toy", "vocab_size": 128, "tokenizer": "none", "eot_id": 0}))
    counting = tmp_path_factory.mktemp("counting")
    data.write_tokens(counting / "train.bin", np.arange(4096), 4096, 8192, 0)
    data.write_tokens(counting / "val.bin", np.arange(1024), 4096, 2048, 0)
    (counting / "meta.json").write_text(json.dumps({"name": "counting", "vocab_size": 4096, "tokenizer": "none"}))
    return d, counting


TINY_patch = ["--preset", "nano", "--seq_len", "32", "--batch_tokens", "1024", "--micro_batch", "4", "--eval_tokens", "2048",
        "--log_every", "1", "--eval_every", "6", "--ckpt_every", "2"]


def run_main(module, monkeypatch, *flags):
    monkeypatch.setattr(sys, "argv", [module.__name__ + ".py", *map(str, flags)])
    module.main()


def test_phases_switch_with_new_optimizer_and_restarted_schedule(toy_data_patch, tmp_path, monkeypatch):
    run_main(patch_train, monkeypatch, "--data_dir", toy_data_patch[0], "--out_dir", tmp_path, "--max_steps", 12,
             "--warmup_steps", 2, *TINY_patch)
    patch, token = read_log(tmp_path / "patch"), read_log(tmp_path / "token")
    assert len(patch) == 8 and len(token) == 4  # lambda = 2/3 of 12 steps
    assert patch[0]["lr"] == token[0]["lr"] == pytest.approx(1e-3)  # warmup restarts at the same peak 2e-3
    assert token[-1]["lr"] < token[1]["lr"] == pytest.approx(2e-3)
    ckpt = torch.load(tmp_path / "token" / "ckpt.pt", weights_only=False)
    assert {s["step"].item() for s in ckpt["optimizer"]["state"].values()} == {4}  # AdamW saw the token phase only
    assert token[-1]["val_loss"] < patch[-1]["val_loss"]  # token-level training helps the token-level loss
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["relative_compute"] == pytest.approx(0.5)
    assert summary["tokens"] == 12 * 1024


def test_continue_schedule_keeps_one_cosine_across_the_switch(toy_data_patch, tmp_path, monkeypatch):
    run_main(patch_train, monkeypatch, "--data_dir", toy_data_patch[0], "--out_dir", tmp_path, "--max_steps", 12,
             "--warmup_steps", 2, "--continue_schedule", *TINY_patch)
    patch, token = read_log(tmp_path / "patch"), read_log(tmp_path / "token")
    lrs = [r["lr"] for r in patch + token]  # logged every step: one schedule, steps 0..11
    assert lrs == pytest.approx([train.get_lr(s, 12, 2e-3, 2e-4, 2) for s in range(12)], abs=1e-6)  # log keeps 6 digits


def test_phases_read_disjoint_data(toy_data_patch, tmp_path, monkeypatch):
    seen = {"patch": [], "token": []}

    def recording(name, loss):
        def wrapped(model, x, *rest):
            seen[name].append(x.flatten().tolist())
            return loss(model, x, *rest)
        return wrapped
    monkeypatch.setattr(patch_train, "patch_loss", recording("patch", patch_train.patch_loss))
    monkeypatch.setattr(patch_train, "token_loss", recording("token", patch_train.token_loss))
    run_main(patch_train, monkeypatch, "--data_dir", toy_data_patch[1], "--out_dir", tmp_path, "--max_steps", 3,
             *TINY_patch, "--patch_fraction", 1 / 3)
    patch_ids = {t for batch in seen["patch"] for t in batch}
    token_ids = {t for batch in seen["token"] for t in batch}
    assert patch_ids == set(range(1024))             # one step of rows of 4 x 32 tokens, nothing more
    assert token_ids == set(range(1024, 3 * 1024 + 1))  # the next two steps (+1: the last target)


def test_lambda_zero_is_train_py(toy_data_patch, tmp_path, monkeypatch):
    flags = ["--data_dir", toy_data_patch[0], "--max_steps", 6, *TINY_patch]
    run_main(train, monkeypatch, "--out_dir", tmp_path / "train", *flags)
    run_main(patch_train, monkeypatch, "--out_dir", tmp_path / "patch", *flags, "--patch_fraction", 0)
    assert not (tmp_path / "patch" / "patch").exists()
    a, b = read_log(tmp_path / "train"), read_log(tmp_path / "patch" / "token")
    assert [(r["loss"], r.get("val_loss")) for r in a] == [(r["loss"], r.get("val_loss")) for r in b]


@pytest.mark.parametrize("phase_to_break", ["patch", "token"])
def test_resume_inside_either_phase(toy_data_patch, tmp_path, monkeypatch, phase_to_break):
    flags = ["--data_dir", toy_data_patch[0], "--max_steps", 9, *TINY_patch]
    run_main(patch_train, monkeypatch, "--out_dir", tmp_path / "whole", *flags)
    calls = {"n": 0}
    original = patch_train.patch_loss if phase_to_break == "patch" else patch_train.token_loss

    # one step is 2 micro-batches of 4 rows in the patch phase, 8 in the token phase; checkpoints every 2 steps
    crash_after = {"patch": 5 * 2, "token": 2 * 8}[phase_to_break]

    def crash(model, x, *rest):
        calls["n"] += 1
        if calls["n"] > crash_after:
            raise KeyboardInterrupt
        return original(model, x, *rest)
    monkeypatch.setattr(patch_train, f"{phase_to_break}_loss", crash)
    with pytest.raises(KeyboardInterrupt):
        run_main(patch_train, monkeypatch, "--out_dir", tmp_path / "broken", *flags)
    monkeypatch.setattr(patch_train, f"{phase_to_break}_loss", original)
    run_main(patch_train, monkeypatch, "--out_dir", tmp_path / "broken", *flags, "--resume")
    for phase in ("patch", "token"):
        whole, resumed = read_log(tmp_path / "whole" / phase), read_log(tmp_path / "broken" / phase)
        assert resumed[-1]["step"] == whole[-1]["step"] and resumed[-1]["loss"] == whole[-1]["loss"]
        assert resumed[-1]["val_loss"] == whole[-1]["val_loss"]


def test_two_processes_match_one(toy_data_patch, tmp_path, monkeypatch):
    flags = ["--data_dir", toy_data_patch[0], "--max_steps", 6, *TINY_patch]
    run_main(patch_train, monkeypatch, "--out_dir", tmp_path / "one", *flags)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "patch_train.py"), "--out_dir", str(tmp_path / "two"), *map(str, flags)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    for phase in ("patch", "token"):
        one, two = read_log(tmp_path / "one" / phase), read_log(tmp_path / "two" / phase)
        assert [r["loss"] for r in one] == pytest.approx([r["loss"] for r in two], abs=2e-4)


def test_bad_input_is_one_clear_line_patch(toy_data_patch, tmp_path, monkeypatch):
    base = ["--data_dir", toy_data_patch[0], "--out_dir", tmp_path / "o", *TINY_patch]
    cases = {
        "K < 1": (["--patch_size", 0], "--patch_size 0 must be >= 1"),
        "lambda > 1": (["--patch_fraction", 1.5], "--patch_fraction 1.5 must be in [0, 1]"),
        "lambda < 0": (["--patch_fraction", -0.1], "--patch_fraction -0.1 must be in [0, 1]"),
        "rows do not tile": (["--patch_size", 3], "not a multiple of patch_size x seq_len"),
        "patch phase < 1 step": (["--max_steps", 3, "--patch_fraction", 0.1], "the patch phase gets 0.1"),
        "token phase < 1 step": (["--max_steps", 3, "--patch_fraction", 0.9], "the token phase gets 0.1"),
        "seq_len > block_size": (["--seq_len", 512, "--batch_tokens", 8192], "block_size"),
    }
    for name, (flags, expected) in cases.items():
        with pytest.raises(train.UsageError) as err:
            run_main(patch_train, monkeypatch, *base, *flags)
        assert expected in str(err.value) and "\n" not in str(err.value), f"{name}: {err.value}"
    assert not (tmp_path / "o").exists()  # nothing started
    res = subprocess.run([sys.executable, str(ROOT / "patch_train.py"), *map(str, base), "--patch_size", "0",
                          "--patch_fraction", "2"], capture_output=True, text=True, cwd=ROOT)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "--patch_size" in lines[0] and "--patch_fraction" in lines[0]
