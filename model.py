"""
One GPT, two flavours, for every method in this repository.

  gpt2  : LayerNorm with bias, learned absolute positions, GELU (tanh) MLP, tied embedding/head.
  llama : RMSNorm, rotary positions (RoPE), SwiGLU MLP with its own hidden size, no biases,
          optional untied head, grouped-query attention (n_kv_head < n_head).

Both use pre-norm residual blocks and F.scaled_dot_product_attention(is_causal=True).
The pieces the methods edit are plain attributes: `wte` (token embedding), `wpe` (positions, gpt2
only), `blocks` (an nn.ModuleList), `ln_f` (final norm) and `lm_head`. `body(x, pos)` runs the
stack on any embeddings at any positions, which is what patch-level training needs.

Also here: presets (`GPTConfig.from_preset`), parameter and FLOP counts, generation, and Hugging
Face checkpoint import/export (`GPT.from_hf`, `model.save_hf`) without importing `transformers`.
"""
import copy
import json
import math
import mmap
import os
import re
import struct
from dataclasses import dataclass, asdict, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


@dataclass
class GPTConfig:
    flavour: str = "gpt2"          # "gpt2" or "llama"
    vocab_size: int = 50257
    block_size: int = 1024         # longest sequence the positions cover
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int = 0             # llama GQA; 0 means n_head (plain multi-head attention)
    n_embd: int = 768
    ffn_hidden: int = 0            # 0: 4*n_embd (gpt2), or LLaMA's 8/3*n_embd rounded up to 256
    tie_embeddings: bool = True    # gpt2 always ties; llama may untie
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    dropout: float = 0.0

    def __post_init__(self):
        if self.flavour not in ("gpt2", "llama"):
            raise ValueError(f"flavour must be 'gpt2' or 'llama', not {self.flavour!r}")
        sizes = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
        small = [f"{f} {getattr(self, f)}" for f in sizes if getattr(self, f) < 1]
        small += [f"{f} {getattr(self, f)}" for f in ("n_kv_head", "ffn_hidden")
                  if getattr(self, f) < 0]  # 0 is allowed here: it means "derive it"
        if small:
            raise ValueError(f"{', '.join(small)}: sizes must be positive")
        self.n_kv_head = self.n_kv_head or self.n_head
        if not self.ffn_hidden:
            # SwiGLU has three matrices, not two: 8/3 x keeps the MLP's parameters at GPT-2's 4 x
            self.ffn_hidden = (4 * self.n_embd if self.flavour == "gpt2"
                               else 256 * math.ceil(8 * self.n_embd / 3 / 256))
        if self.n_embd % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"n_embd {self.n_embd} must divide by n_head {self.n_head}, "
                             f"and n_head by n_kv_head {self.n_kv_head}")
        if self.flavour == "llama" and self.head_dim % 2:  # RoPE rotates pairs of channels
            raise ValueError(f"head dim n_embd / n_head = {self.n_embd} / {self.n_head} = "
                             f"{self.head_dim} is odd; rotary positions need an even head dim")
        if self.flavour == "gpt2" and not self.tie_embeddings:
            raise ValueError("the gpt2 flavour always ties the embedding and the head")

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    @staticmethod
    def preset_fields(name):
        """The fields a named shape (see PRESETS) sets, or those of 'NLdH': N layers, hidden size d,
        LLaMA flavour, n_head = d / 128 when 128 divides d, else max(1, d // 64); so 6L2048H has 16
        heads of 128, 2L192H 3 heads of 64 and 2L96H one head of 96 (d must divide by n_head:
        2L200H, 3 heads, is refused)."""
        m = re.fullmatch(r"(\d+)L(\d+)H", name)
        if m:
            n_layer, n_embd = int(m[1]), int(m[2])
            head_dim = 128 if n_embd % 128 == 0 else 64
            return dict(flavour="llama", n_layer=n_layer, n_embd=n_embd,
                        n_head=max(1, n_embd // head_dim))
        if name in PRESETS:
            return dict(PRESETS[name])
        import difflib
        near = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ValueError(f"unknown preset {name!r}: {hint}choose one of {', '.join(PRESETS)} "
                         "or 'NLdH' like 6L2048H")

    @classmethod
    def from_preset(cls, name, **overrides):
        """A named shape or 'NLdH' (preset_fields), with fields overridden."""
        return cls(**{**cls.preset_fields(name), **overrides})


PRESETS = {
    # tiny shapes that train in minutes on a laptop CPU
    "nano": dict(flavour="llama", n_layer=2, n_head=2, n_embd=64, ffn_hidden=176, block_size=256),
    "tiny": dict(flavour="llama", n_layer=4, n_head=4, n_embd=256, ffn_hidden=688, block_size=512),
    "tiny-gpt2": dict(flavour="gpt2", n_layer=4, n_head=4, n_embd=256, block_size=512),
    "small": dict(flavour="llama", n_layer=8, n_head=8, n_embd=512, ffn_hidden=1376,
                  block_size=1024),
    # GPT-2 shapes (Radford et al. 2019)
    "gpt2": dict(flavour="gpt2", n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(flavour="gpt2", n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(flavour="gpt2", n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(flavour="gpt2", n_layer=48, n_head=25, n_embd=1600),
    # the patch-level training paper's LLaMA shapes (Shao et al. 2024, sec. 4.1); context 2048
    "llama-370m": dict(flavour="llama", n_layer=24, n_head=16, n_embd=1024, ffn_hidden=2752,
                       block_size=2048, tie_embeddings=False),
    "llama-780m": dict(flavour="llama", n_layer=24, n_head=24, n_embd=1536, ffn_hidden=4128,
                       block_size=2048, tie_embeddings=False),
    "llama-1.3b": dict(flavour="llama", n_layer=24, n_head=32, n_embd=2048, ffn_hidden=5504,
                       block_size=2048, tie_embeddings=False),
    "llama-2.7b": dict(flavour="llama", n_layer=32, n_head=32, n_embd=2560, ffn_hidden=6880,
                       block_size=2048, tie_embeddings=False),
    # PanGu-pi Pro (Tang et al. 2024, fig. 1 / configure.png): LLaMA blocks, head dim 128, untied
    # head; the FFN is 8/3 * n_embd rounded up to a multiple of 256 as InternEvo rounds it
    # (1792 -> 4864, 2048 -> 5632)
    "pangu-pi-1b": dict(flavour="llama", n_layer=12, n_head=16, n_embd=2048, ffn_hidden=5632,
                        block_size=2048, tie_embeddings=False),
    "pangu-pi-1b-pro": dict(flavour="llama", n_layer=21, n_head=14, n_embd=1792, ffn_hidden=4864,
                            block_size=2048, tie_embeddings=False),
    "pangu-pi-1.5b-pro": dict(flavour="llama", n_layer=22, n_head=16, n_embd=2048, ffn_hidden=5632,
                              block_size=2048, tie_embeddings=False),
    # a CPU-sized wide-shallow / deep-narrow pair of equal parameters (4.65M / 4.67M at an
    # 8192-id vocabulary, tied)
    "pangu-cpu-wide": dict(flavour="llama", n_layer=3, n_head=4, n_embd=256, ffn_hidden=768,
                           block_size=512),
    "pangu-cpu-deep": dict(flavour="llama", n_layer=7, n_head=3, n_embd=192, ffn_hidden=512,
                           block_size=512),
    # TinyLlama-1.1B, the growth paper's 1.1B target (Du et al. 2024)
    "tinyllama-1.1b": dict(flavour="llama", n_layer=22, n_head=32, n_kv_head=4, n_embd=2048,
                           ffn_hidden=5632, block_size=2048, tie_embeddings=False),
}


def rope_cache(head_dim, length, theta, device=None):
    """cos/sin tables for rotary positions, in the 'rotate half' layout Hugging Face Llama uses."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
                               / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32, device=device), inv_freq)
    # 'rotate half' (not interleaved pairs): Hugging Face's q/k weights then load unpermuted
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    # the tables are float32: the result goes back to the activations' dtype
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        bias = cfg.flavour == "gpt2"
        # one fused projection, rows laid out [Q (n_head heads); K (n_kv_head); V (n_kv_head)],
        # head-major
        self.qkv = nn.Linear(cfg.n_embd, (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim,
                             bias=bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=bias)
        self.dropout = cfg.dropout

    def forward(self, x, rope=None):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split([self.n_head * self.head_dim, self.n_kv_head * self.head_dim,
                                     self.n_kv_head * self.head_dim], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # the fused kernel (flash / memory-efficient attention where available); enable_gqa lets
        # each K/V head serve n_head / n_kv_head query heads
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           enable_gqa=self.n_kv_head != self.n_head)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.swiglu = cfg.flavour == "llama"
        bias = not self.swiglu
        self.fc = nn.Linear(cfg.n_embd, cfg.ffn_hidden, bias=bias)  # llama: the "up" projection
        self.gate = nn.Linear(cfg.n_embd, cfg.ffn_hidden, bias=False) if self.swiglu else None
        self.proj = nn.Linear(cfg.ffn_hidden, cfg.n_embd, bias=bias)

    def forward(self, x):
        if self.swiglu:
            h = F.silu(self.gate(x)) * self.fc(x)
        else:
            h = F.gelu(self.fc(x), approximate="tanh")  # tanh: GPT-2's own gelu_new
        return self.proj(h)


def make_norm(cfg):
    if cfg.flavour == "gpt2":
        return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps)
    return nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1, self.attn = make_norm(cfg), Attention(cfg)
        self.ln_2, self.mlp = make_norm(cfg), MLP(cfg)

    def forward(self, x, rope=None):
        # pre-norm: the residual stream itself is never normalised, only each branch's input
        x = x + self.attn(self.ln_1(x), rope)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer; see the module docstring for the two flavours."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.flavour == "gpt2" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.tie_weights()
        if cfg.flavour == "llama":
            # not persistent: recomputed from the config, so checkpoints stay small and
            # dtype-agnostic
            self.register_buffer("rope_cos", torch.empty(0), persistent=False)
            self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        # recompute each block in backward, trading compute for memory (--activation_checkpointing)
        self.activation_checkpointing = False
        self.init_buffers()
        self.init_weights()

    @classmethod
    def on_meta(cls, cfg):
        """GPT(cfg) without storage (meta device), for sharding before any weight exists; its
        init_weights() then draws exactly the weights GPT(cfg) has, one layer's worth of memory at
        a time."""
        with torch.device("meta"):
            model = cls(cfg)
        # GPT(cfg) advances the default generator in each layer's constructor (an init that
        # init_weights replaces); advance it the same way, so the draws that follow match
        for m in model.modules():
            has_own_params = next(m.parameters(recurse=False), None) is not None
            if hasattr(m, "reset_parameters") and has_own_params:
                copy.deepcopy(m).to_empty(device="cpu").reset_parameters()
        return model

    def tie_weights(self):
        """Share the embedding with the head (tie_embeddings)."""
        # called again after to_empty() or assigning loaded tensors: both give each module its own
        # parameter, which would silently untie them
        if self.config.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def init_buffers(self, device=None):
        """Compute the RoPE tables (on device; default: where they are, CPU for meta)."""
        # also needed for a model whose storage came from to_empty() or whose weights were assigned
        # from a memory-mapped file: neither computes buffers
        if self.config.flavour == "llama":
            if device is None:
                device = "cpu" if self.rope_cos.is_meta else self.rope_cos.device
            self.rope_cos, self.rope_sin = rope_cache(self.config.head_dim, self.config.block_size,
                                                      self.config.rope_theta, device=device)

    @torch.no_grad()
    def init_weights(self, fill=None):
        """GPT-2's init: N(0, 0.02) weights, zero biases, then N(0, 0.02 / sqrt(2 n_layer)) for the
        residual projections. The draws come in a fixed order from torch's default generator.
        fill(param, init) applies init to param (default: init(param))."""
        # a sharded model passes a fill that draws the whole tensor and keeps its own shard, so
        # that it starts from the same weights as an unsharded one
        fill = fill or (lambda p, init: init(p))
        for m in self.modules():  # leaves in the same order as self.apply(): the same draws
            if isinstance(m, (nn.Linear, nn.Embedding)):
                fill(m.weight, lambda t: nn.init.normal_(t, mean=0.0, std=0.02))
            elif isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
                # no draws; needed after storage comes from to_empty
                fill(m.weight, nn.init.ones_)
            if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is not None:
                fill(m.bias, nn.init.zeros_)
        # 2 n_layer residual branches add up: scaled down, their sum keeps unit scale
        std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                fill(p, lambda t: nn.init.normal_(t, mean=0.0, std=std))

    def model_args(self):
        """Everything needed to rebuild this model; saved in every checkpoint."""
        return asdict(self.config)

    # --- forward pieces ---------------------------------------------------------------------------
    def body(self, x, pos=None):
        """Run the blocks and the final norm on embeddings x [B, T, C] at positions pos [T]
        (default 0..T-1). Returns hidden states [B, T, C]."""
        T = x.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        if pos is None:
            pos = torch.arange(T, device=x.device)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(pos)
        else:
            # indexed by pos, not sliced: patch training puts embeddings at positions of its own
            rope = (self.rope_cos[pos].to(x.dtype), self.rope_sin[pos].to(x.dtype))
        x = self.drop(x)
        for block in self.blocks:
            if self.activation_checkpointing and torch.is_grad_enabled():
                # keep only each block's input; its activations are recomputed in backward
                x = torch.utils.checkpoint.checkpoint(block, x, rope, use_reentrant=False)
            else:
                x = block(x, rope)
        return self.ln_f(x)

    def forward(self, idx, targets=None):
        """idx [B, T] token ids -> (logits [B, T, V], mean cross-entropy against targets or
        None)."""
        logits = self.lm_head(self.body(self.wte(idx)))
        loss = None
        if targets is not None:
            # in float32: a bf16 log-softmax over a large vocabulary loses precision; targets of
            # -1 are not scored (nanoGPT's convention for masked positions)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss

    def run(self, fn, *args):
        """fn(self, *args). A loss that calls self.wte / self.body / self.lm_head itself (patch
        training) goes through here under FSDP."""
        # registered as an FSDP forward method (train.shard), so calling it gathers the root's
        # sharded weights as forward() would
        return fn(self, *args)

    # --- counting ---------------------------------------------------------------------------------
    def num_params(self, embeddings=True):
        """Unique parameters; without embeddings drops the token/position tables and an untied
        head."""
        n = sum(p.numel() for p in self.parameters())  # a tied head is one parameter, counted once
        if not embeddings:
            n -= self.wte.weight.numel() + (self.wpe.weight.numel() if self.wpe is not None else 0)
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def flops_per_token(self, seq_len):
        """Training FLOPs per token (forward + backward) = 6*N + 12*L*C*T (Kaplan et al. 2020; PaLM
        app. B), N = parameters in matrix multiplies (blocks and the head, not the embedding
        lookups), T = seq_len."""
        cfg = self.config
        # the head is a matmul even when tied to the embedding, whose lookup is not
        n_matmul = self.num_params(embeddings=False) + self.lm_head.weight.numel()
        # the attention term counts the full T x T score matrix, as the MFU convention does
        return 6 * n_matmul + 12 * cfg.n_layer * cfg.n_embd * seq_len

    # --- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
        """Sample max_new_tokens continuations of idx [B, T]; temperature 0 means greedy."""
        for _ in range(max_new_tokens):
            # no KV cache: the whole (cropped) context runs again each step; simple, and enough here
            logits, _ = self(idx[:, -self.config.block_size:])
            logits = logits[:, -1, :].float()
            if temperature == 0:
                next_id = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, -float("inf"))
                next_id = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, next_id], dim=1)
        return idx

    # --- Hugging Face interop ---------------------------------------------------------------------
    @classmethod
    def from_hf(cls, path, **overrides):
        """Load a local Hugging Face GPT-2 or Llama checkpoint directory (config.json +
        model.safetensors, sharded safetensors, or pytorch_model.bin). No `transformers` import is
        needed."""
        with open(os.path.join(path, "config.json")) as f:
            hf = json.load(f)
        cfg = GPTConfig(**{**_config_from_hf(hf), **overrides})
        # shapes only: the weights come from the files, not from a random init
        with torch.device("meta"):
            model = cls(cfg)
        sd = _read_hf_weights(path)  # memory-mapped: a tensor is read from disk when it is used
        if cfg.flavour == "gpt2":  # GPT2LMHeadModel's files may name the body "transformer."
            sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
        ours, state = model.state_dict(), {}
        for name, (hf_name, transpose) in _hf_names(cfg).items():
            parts = hf_name if isinstance(hf_name, tuple) else (hf_name,)
            missing = [n for n in parts if n not in sd]
            if missing:
                if name == "lm_head.weight" and cfg.tie_embeddings:
                    continue  # a tied head is the embedding: files may leave it out
                raise KeyError(f"{path}: checkpoint lacks {missing[0]} (needed for {name})")
            # q/k/v are fused here: concatenated in our [Q; K; V] row layout
            src = torch.cat([sd[n] for n in parts], dim=0) if len(parts) > 1 else sd[parts[0]]
            src = src.t() if transpose else src
            if src.shape != ours[name].shape:
                raise ValueError(f"{path}: {hf_name} has shape {tuple(src.shape)}, "
                                 f"expected {tuple(ours[name].shape)} for {name}")
            # the file's own (mapped) tensor where it already is an fp32 contiguous one: no copy
            state[name] = src.to(torch.float32).contiguous()
        if cfg.tie_embeddings:
            state["lm_head.weight"] = state["wte.weight"]
        # assign=True swaps in the file's tensors as parameters: tie the head again, and compute
        # the RoPE tables that the meta-device model never had
        model.load_state_dict(state, assign=True)
        model.tie_weights()
        model.init_buffers()
        return model

    def save_hf(self, path, dtype=torch.float32, eot_id=None):
        """Write config.json + model.safetensors that transformers' AutoModelForCausalLM loads.
        eot_id, the data's end-of-text id, becomes bos/eos_token_id (None writes null)."""
        cfg = self.config
        # null rather than GPT-2's default 50256, which may not exist in this vocabulary
        if eot_id is not None and not 0 <= eot_id < cfg.vocab_size:
            raise ValueError(f"eot_id {eot_id} is outside the vocabulary 0..{cfg.vocab_size - 1}")
        os.makedirs(path, exist_ok=True)
        sd = self.state_dict()
        tensors = {}
        for name, (hf_name, transpose) in _hf_names(cfg).items():
            if name == "lm_head.weight" and cfg.tie_embeddings:
                continue  # transformers re-ties the head to the embedding on load
            t = sd[name].detach().to("cpu", dtype)
            t = t.t() if transpose else t
            if isinstance(hf_name, tuple):  # our fused qkv back into Llama's q_proj, k_proj, v_proj
                sizes = [cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim,
                         cfg.n_kv_head * cfg.head_dim]
                tensors.update(zip(hf_name, t.split(sizes, dim=0)))
            else:
                tensors[hf_name] = t
        if cfg.flavour == "gpt2":
            tensors = {"transformer." + k: v for k, v in tensors.items()}
        _write_safetensors(os.path.join(path, "model.safetensors"), tensors)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump({**_config_to_hf(cfg, dtype), "bos_token_id": eot_id, "eos_token_id": eot_id},
                      f, indent=2)


def _hf_names(cfg):
    """Our parameter name -> (Hugging Face name or tuple of names to concatenate, transpose?)."""
    names = {}
    if cfg.flavour == "gpt2":  # GPT-2's Conv1D stores weights as [in, out]: transpose every matrix
        names.update({"wte.weight": ("wte.weight", False), "wpe.weight": ("wpe.weight", False),
                      "ln_f.weight": ("ln_f.weight", False), "ln_f.bias": ("ln_f.bias", False),
                      "lm_head.weight": ("wte.weight", False)})
        per_layer = {"ln_1": "ln_1", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj",
                     "ln_2": "ln_2", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
        for i in range(cfg.n_layer):
            for ours, theirs in per_layer.items():
                matrix = not ours.startswith("ln")
                names[f"blocks.{i}.{ours}.weight"] = (f"h.{i}.{theirs}.weight", matrix)
                names[f"blocks.{i}.{ours}.bias"] = (f"h.{i}.{theirs}.bias", False)
        return names
    names.update({"wte.weight": ("model.embed_tokens.weight", False),
                  "ln_f.weight": ("model.norm.weight", False),
                  "lm_head.weight": ("lm_head.weight", False)})
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        names.update({
            f"blocks.{i}.ln_1.weight": (p + "input_layernorm.weight", False),
            f"blocks.{i}.attn.qkv.weight": (tuple(p + f"self_attn.{x}_proj.weight" for x in "qkv"),
                                            False),
            f"blocks.{i}.attn.proj.weight": (p + "self_attn.o_proj.weight", False),
            f"blocks.{i}.ln_2.weight": (p + "post_attention_layernorm.weight", False),
            f"blocks.{i}.mlp.gate.weight": (p + "mlp.gate_proj.weight", False),
            f"blocks.{i}.mlp.fc.weight": (p + "mlp.up_proj.weight", False),
            f"blocks.{i}.mlp.proj.weight": (p + "mlp.down_proj.weight", False)})
    return names


def _config_from_hf(hf):
    # options this model does not implement are refused, not ignored: the weights would load and
    # then compute something else
    kind = hf.get("model_type")
    if kind == "gpt2":
        if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"unsupported GPT-2 activation {hf['activation_function']!r} "
                             "(need gelu_new)")
        if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
            raise ValueError("unsupported GPT-2 options: scale_attn_by_inverse_layer_idx / "
                             "reorder_and_upcast_attn")
        return dict(flavour="gpt2", vocab_size=hf["vocab_size"], block_size=hf["n_positions"],
                    n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                    ffn_hidden=hf.get("n_inner") or 4 * hf["n_embd"],
                    norm_eps=hf.get("layer_norm_epsilon", 1e-5))
    if kind == "llama":
        rope = hf.get("rope_parameters") or {}  # newer transformers nest rope_theta here
        bad = [k for k in ("attention_bias", "mlp_bias", "rope_scaling", "sliding_window")
               if hf.get(k)]
        if rope.get("rope_type", "default") != "default":
            bad += [f"rope_type {rope['rope_type']}"]
        if bad or hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported Llama options: {bad or hf.get('hidden_act')}")
        if hf.get("head_dim") not in (None, hf["hidden_size"] // hf["num_attention_heads"]):
            raise ValueError(f"unsupported head_dim {hf['head_dim']} != "
                             "hidden_size / num_attention_heads")
        return dict(flavour="llama", vocab_size=hf["vocab_size"],
                    block_size=hf.get("max_position_embeddings", 2048),
                    n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"],
                    n_embd=hf["hidden_size"],
                    n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"],
                    ffn_hidden=hf["intermediate_size"],
                    tie_embeddings=hf.get("tie_word_embeddings", False),
                    norm_eps=hf.get("rms_norm_eps", 1e-6),
                    rope_theta=rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    raise ValueError(f"unsupported model_type {kind!r}: from_hf reads 'gpt2' and 'llama' "
                     "checkpoints")


def _config_to_hf(cfg, dtype):
    dtype_name = str(dtype).removeprefix("torch.")
    if cfg.flavour == "gpt2":
        return dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", vocab_size=cfg.vocab_size,
                    n_positions=cfg.block_size, n_ctx=cfg.block_size, n_embd=cfg.n_embd,
                    n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=cfg.ffn_hidden,
                    activation_function="gelu_new", layer_norm_epsilon=cfg.norm_eps,
                    resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                    tie_word_embeddings=True, torch_dtype=dtype_name)
    # rope_theta twice: older transformers read it at the top level, newer in rope_parameters
    return dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=cfg.vocab_size,
                hidden_size=cfg.n_embd, intermediate_size=cfg.ffn_hidden,
                num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                num_key_value_heads=cfg.n_kv_head, hidden_act="silu",
                max_position_embeddings=cfg.block_size, rms_norm_eps=cfg.norm_eps,
                rope_theta=cfg.rope_theta,
                rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
                tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False,
                attention_dropout=cfg.dropout, torch_dtype=dtype_name)


# safetensors is a JSON header (name -> dtype, shape, byte range) after an 8-byte length, then raw
# little-endian bytes; reading it directly spares a dependency.
_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8,
              "BOOL": torch.bool}


def _read_safetensors(filename):
    """name -> tensor, each a view of the file mapped copy-on-write: nothing is read until used."""
    with open(filename, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        # copy-on-write: training a tensor changes this process's copy of the page, never the
        # file; a file of only empty tensors has no bytes to map
        mapped = None
        if os.fstat(f.fileno()).st_size > 8 + n:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = _ST_DTYPES[info["dtype"]]
        if end == start:  # frombuffer refuses empty views
            out[name] = torch.empty(info["shape"], dtype=dtype)
            continue
        out[name] = torch.frombuffer(mapped, dtype=dtype, offset=8 + n + start,
                                     count=(end - start) // dtype.itemsize).view(info["shape"])
    return out


def _write_safetensors(filename, tensors):
    """The header first (sizes follow from shapes), then each tensor's bytes in turn."""
    # tensor by tensor, so there is never a second copy of the whole model in memory
    names = {v: k for k, v in _ST_DTYPES.items()}
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, t in tensors.items():
        size = t.numel() * t.element_size()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)  # the format asks for 8-byte alignment of the data
    with open(filename, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for t in tensors.values():
            if t.numel():
                f.write(t.detach().cpu().contiguous().view(torch.uint8).numpy().data)


def _read_hf_weights(path):
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):  # a sharded checkpoint: the index maps each tensor to its file
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        return {k: v for fn in files for k, v in _read_safetensors(os.path.join(path, fn)).items()}
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return _read_safetensors(os.path.join(path, "model.safetensors"))
    if os.path.exists(os.path.join(path, "pytorch_model.bin")):
        bin_path = os.path.join(path, "pytorch_model.bin")
        try:  # memory-mapped, like safetensors; files in torch's pre-1.6 format cannot be mapped
            return torch.load(bin_path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            return torch.load(bin_path, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or "
                            "pytorch_model.bin")
