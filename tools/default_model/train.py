#!/usr/bin/env python3
"""Step 2 of the default model (on the GPU machine): train a tiny Llama on the KJV token ids.

  python3 tools/default_model/train.py --data .train --out "$OUT" --minutes 6

A self-contained Llama in plain torch (no transformers): token embedding, N blocks of
  x += o_proj(attention(rope(q_proj(rms(x))), rope(k_proj(rms(x))), v_proj(rms(x))))
  x += down_proj(silu(gate_proj(rms(x))) * up_proj(rms(x)))
then a final RMSNorm and the output head tied to the embedding. RoPE is HF's rotate-half layout
(it rotates x[i] with x[i + head_dim/2]) and RMSNorm computes in float32, both as HF's
LlamaForCausalLM does, so the saved folder is an ordinary HF checkpoint that `strata convert`
(or transformers) reads.

Training: random windows of --ctx + 1 ids from train.bin, AdamW, linear warm-up then cosine decay
over the wall-time budget (--minutes counts from the first step, torch.compile included), bf16
autocast on CUDA, float32 on the CPU. Everything is seeded. The validation loss (val.bin, every
window of it) is measured every --eval-seconds.

Output (each file well under 16 MiB at the default size):
  OUT/final/{config.json, model.safetensors}  the weights at the end of the budget
  OUT/best/{config.json, model.safetensors}   the weights with the lowest validation loss
  OUT/train_log.txt                            everything printed
  OUT/samples.json                             greedy continuations (ids and text) of both
Safetensors hold bfloat16 tensors with HF names (model.embed_tokens.weight,
model.layers.N.self_attn.q_proj.weight, ..., model.norm.weight; no lm_head.weight since the head
is tied: config.json says tie_word_embeddings).

Needs torch (2.x on the GPU; the CPU smoke test also runs on Debian's 1.13) and numpy:
  python3 tools/default_model/train.py --data .train --out /tmp/smoke --minutes 0.2 --device cpu \\
      --layers 2 --dim 64 --heads 2 --ffn 192 --ctx 64 --batch 8
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- model --------------------------------------------------------------------------------------

class Config:
    def __init__(self, vocab_size: int, dim: int, layers: int, heads: int, kv_heads: int, ffn: int,
                 ctx: int, rope_theta: float, rms_eps: float, dropout: float, bos_id: int, eos_id: int):
        if dim % heads or heads % kv_heads:
            raise SystemExit(f"--dim {dim} must divide by --heads {heads}, which must divide by --kv-heads {kv_heads}")
        self.vocab_size, self.dim, self.layers = vocab_size, dim, layers
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.ffn, self.ctx, self.rope_theta, self.rms_eps = ffn, ctx, rope_theta, rms_eps
        self.dropout, self.bos_id, self.eos_id = dropout, bos_id, eos_id

    def hf_config(self) -> dict:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.ctx,
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
            "tie_word_embeddings": True,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "bos_token_id": self.bos_id,
            "eos_token_id": self.eos_id,
            "initializer_range": 0.02,
            "use_cache": True,
            "dtype": "bfloat16",
            "torch_dtype": "bfloat16",
        }


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(cfg: Config, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: [ctx, head_dim], HF's layout (the half-size frequency table repeated twice)."""
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
    t = torch.arange(cfg.ctx, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(device), emb.sin().to(device)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def attention(q, k, v, dropout_p: float) -> torch.Tensor:
    """Causal attention, q/k/v: [batch, heads, seq, head_dim]."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    seq = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    mask = torch.ones(seq, seq, dtype=torch.bool, device=q.device).triu(1)
    probs = scores.float().masked_fill(mask, float("-inf")).softmax(-1).to(q.dtype)
    return F.dropout(probs, dropout_p) @ v


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.q_proj = nn.Linear(cfg.dim, cfg.heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        hd = self.cfg.head_dim
        q = self.q_proj(x).view(b, t, self.cfg.heads, hd).transpose(1, 2)  # [b, h, t, hd]
        k = self.k_proj(x).view(b, t, self.cfg.kv_heads, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.cfg.kv_heads, hd).transpose(1, 2)
        cos, sin = cos[:t].to(q.dtype), sin[:t].to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.cfg.kv_heads != self.cfg.heads:
            rep = self.cfg.heads // self.cfg.kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        y = attention(q, k, v, self.cfg.dropout if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.cfg.heads * hd))


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn, bias=False)
        self.down_proj = nn.Linear(cfg.ffn, cfg.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.rms_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.rms_eps)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin):
        x = x + self.dropout(self.self_attn(self.input_layernorm(x), cos, sin))
        return x + self.dropout(self.mlp(self.post_attention_layernorm(x)))


class Llama(nn.Module):
    """Parameter names are HF's minus the "model." prefix (see hf_state_dict)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.dim, cfg.rms_eps)
        cos, sin = rope_tables(cfg, "cpu")
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        # GPT-2's scaled init of the projections that write into the residual stream.
        for name, p in self.named_parameters():
            if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.layers))

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [batch, seq] -> logits [batch, seq, vocab] (float32)."""
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, self.rope_cos, self.rope_sin)
        x = self.norm(x)
        return F.linear(x, self.embed_tokens.weight).float()

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        return {"model." + k: v for k, v in self.state_dict().items()}


# ---- checkpoint ---------------------------------------------------------------------------------

def save_safetensors(path: str, tensors: dict[str, torch.Tensor]) -> None:
    """bfloat16 safetensors (header JSON, 8-byte aligned, then the tensors' bytes in order)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(device="cpu", dtype=torch.bfloat16).contiguous()
        blob = t.view(torch.int16).numpy().astype("<i2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def save_hf(folder: str, cfg: Config, state: dict[str, torch.Tensor]) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg.hf_config(), f, indent=2)
        f.write("\n")
    save_safetensors(os.path.join(folder, "model.safetensors"), state)


def cpu_copy(model: Llama) -> dict[str, torch.Tensor]:
    """A snapshot of the weights with HF names (a copy even when the model is on the CPU)."""
    return {k: t.detach().to("cpu", copy=True) for k, t in model.hf_state_dict().items()}


# ---- data ---------------------------------------------------------------------------------------

def load_ids(path: str) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(path, dtype="<u2").astype(np.int64))


def load_decoder(data_dir: str):
    """ids -> text with the vocabulary of data_dir (None when it cannot be read)."""
    try:
        sys.dont_write_bytecode = True  # no __pycache__ in the source tree
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from prepare_data import read_vocab
        from train_bpe import BYTE_CHARS
        vocab = read_vocab(os.path.join(data_dir, "vocab.gguf"))
        byte_of = {c: b for b, c in enumerate(BYTE_CHARS)}
        special = set(range(len(vocab.tokens) - 2, len(vocab.tokens)))

        def decode(ids):
            out = bytearray()
            for i in ids:
                tok = vocab.tokens[i]
                out += tok.encode() if i in special else bytes(byte_of[c] for c in tok)
            return out.decode("utf-8", "replace")
        return decode
    except Exception as e:  # the samples are a convenience; training does not need them
        print(f"note: no decoder for samples ({e})")
        return None


# ---- training -----------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".train", help="folder with train.bin, val.bin, meta.json")
    ap.add_argument("--out", required=True, help="output folder (final/, best/, train_log.txt)")
    ap.add_argument("--minutes", type=float, default=6.0, help="wall-time budget of the training loop")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=0, help="0: same as --heads")
    ap.add_argument("--ffn", type=int, default=704)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--batch", type=int, default=128, help="sequences per step")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--eval-seconds", type=float, default=15.0)
    ap.add_argument("--log-seconds", type=float, default=5.0)
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                    help="torch.compile (auto: on CUDA when available; falls back to eager on failure)")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    log_file = open(os.path.join(args.out, "train_log.txt"), "w")

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    with open(os.path.join(args.data, "meta.json")) as f:
        meta = json.load(f)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    train = load_ids(os.path.join(args.data, "train.bin")).to(device)
    val = load_ids(os.path.join(args.data, "val.bin")).to(device)
    cfg = Config(meta["vocab_size"], args.dim, args.layers, args.heads, args.kv_heads or args.heads,
                 args.ffn, args.ctx, args.rope_theta, 1e-5, args.dropout, meta["bos_id"], meta["eos_id"])
    model = Llama(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"torch {torch.__version__} on {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if cuda else ""))
    log(f"data: {len(train)} train ids, {len(val)} val ids, vocab {cfg.vocab_size}")
    log(f"model: {cfg.layers} layers, dim {cfg.dim}, heads {cfg.heads}/{cfg.kv_heads} x {cfg.head_dim}, "
        f"ffn {cfg.ffn}, ctx {cfg.ctx}, tied embeddings: {n_params / 1e6:.2f}M params "
        f"({n_params * 2 / 2**20:.1f} MiB in bf16)")
    log(f"train: batch {args.batch} x {cfg.ctx} = {args.batch * cfg.ctx} ids/step, lr {args.lr}, "
        f"wd {args.weight_decay}, dropout {args.dropout}, {args.minutes} min, seed {args.seed}")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=cuda)
    except (TypeError, RuntimeError):
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    use_compile = args.compile == "on" or (args.compile == "auto" and cuda)
    step_model = model
    if use_compile:
        if hasattr(torch, "compile"):
            step_model = torch.compile(model)
        else:
            log("note: this torch has no torch.compile; running eager")
            use_compile = False

    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    offsets = torch.arange(cfg.ctx + 1, device=device)

    def batch():
        start = torch.randint(0, len(train) - cfg.ctx - 1, (args.batch,), device=device, generator=gen)
        chunk = train[start[:, None] + offsets]
        return chunk[:, :-1], chunk[:, 1:]

    def autocast():
        if cuda:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return torch.autocast(device_type="cpu", enabled=False)

    def train_step(m, x, y, lr):
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast():
            loss = F.cross_entropy(m(x).view(-1, cfg.vocab_size), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    @torch.no_grad()
    def val_loss() -> float:
        model.eval()
        n = (len(val) - 1) // cfg.ctx
        total, count = 0.0, 0
        for i in range(0, n, args.batch):
            starts = torch.arange(i, min(n, i + args.batch), device=device) * cfg.ctx
            chunk = val[starts[:, None] + offsets]
            with autocast():
                logits = model(chunk[:, :-1])
            total += F.cross_entropy(logits.reshape(-1, cfg.vocab_size), chunk[:, 1:].reshape(-1),
                                     reduction="sum").item()
            count += chunk[:, 1:].numel()
        model.train()
        return total / max(count, 1)

    def lr_at(step: int, progress: float) -> float:
        warm = min(1.0, (step + 1) / args.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return args.lr * warm * (args.min_lr_ratio + (1 - args.min_lr_ratio) * cosine)

    budget_s = args.minutes * 60
    v0 = val_loss()
    log(f"val loss before training {v0:.4f} (uniform would be {math.log(cfg.vocab_size):.4f})")
    best = {"loss": float("inf"), "state": None, "step": 0, "t": 0.0}
    t_start = time.time()
    step, tokens, last_log, last_eval = 0, 0, t_start, t_start
    while True:
        elapsed = time.time() - t_start
        if elapsed >= budget_s:
            break
        x, y = batch()
        lr = lr_at(step, elapsed / budget_s)
        try:
            loss = train_step(step_model, x, y, lr)
        except Exception as e:  # a torch.compile failure shows up at the first step
            if step_model is model:
                raise
            log(f"note: torch.compile failed ({type(e).__name__}: {str(e)[:300]}); running eager")
            step_model = model
            loss = train_step(step_model, x, y, lr)
        step += 1
        tokens += x.numel()
        now = time.time()
        if step == 1 and use_compile and step_model is not model:
            log(f"first step (compile) took {now - t_start:.1f} s")
        if now - last_log >= args.log_seconds or step == 1:
            log(f"step {step:6d}  {now - t_start:6.1f} s  loss {loss.item():.4f}  lr {lr:.2e}  "
                f"{tokens / (now - t_start) / 1e3:.0f}k ids/s  epoch {tokens / len(train):.1f}")
            last_log = now
        if now - last_eval >= args.eval_seconds:
            v = val_loss()
            mark = ""
            if v < best["loss"]:
                best = {"loss": v, "state": cpu_copy(model), "step": step, "t": now - t_start}
                mark = "  (best)"
            log(f"step {step:6d}  {now - t_start:6.1f} s  val loss {v:.4f}{mark}")
            last_eval = time.time()

    train_time = time.time() - t_start
    v = val_loss()
    final_state = cpu_copy(model)
    if v < best["loss"] or best["state"] is None:
        best = {"loss": v, "state": final_state, "step": step, "t": train_time}
    log(f"done: {step} steps, {tokens / 1e6:.1f}M ids ({tokens / len(train):.1f} epochs) in {train_time:.0f} s; "
        f"final val loss {v:.4f}; best {best['loss']:.4f} at step {best['step']} ({best['t']:.0f} s)")

    save_hf(os.path.join(args.out, "final"), cfg, final_state)
    save_hf(os.path.join(args.out, "best"), cfg, best["state"])
    log(f"saved {args.out}/final and {args.out}/best")

    # Greedy continuations of the first chapter's opening, for comparison with `strata run`:
    # float32 math without TF32, as Strata computes an F32 file.
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    decode = load_decoder(args.data)
    prompt = train[:12].tolist()
    samples = {"vocab_sha256": meta.get("vocab_sha256"), "prompt_ids": prompt, "prompt_text": decode(prompt) if decode else None}
    eval_model = Llama(cfg).to(device)
    for name, state in (("final", final_state), ("best", best["state"])):
        eval_model.load_state_dict({k[len("model."):]: t.to(torch.bfloat16).float() for k, t in state.items()})
        eval_model.eval()
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(48):
                window = torch.tensor([ids[-cfg.ctx:]], device=device)
                ids.append(int(eval_model(window)[0, -1].argmax()))
        samples[name] = {"ids": ids[len(prompt):], "text": decode(ids[len(prompt):]) if decode else None}
        log(f"greedy ({name}): {samples[name]['text']!r}")
    with open(os.path.join(args.out, "samples.json"), "w") as f:
        json.dump(samples, f, indent=1)
        f.write("\n")
    log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
