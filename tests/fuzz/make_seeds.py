#!/usr/bin/env python3
"""Writes small valid GGUF files (every metadata value type, a few tensors, a tiny llama model
header) as the fuzzer's seed corpus. Usage: make_seeds.py OUT_DIR"""
import os
import struct
import sys

def s(x: bytes) -> bytes:
    return struct.pack('<Q', len(x)) + x

def kv(key, vtype, payload):
    return s(key.encode()) + struct.pack('<I', vtype) + payload

def gguf(kvs, tensors, alignment=32, version=3):
    # tensors: (name, ne list, ggml type, raw bytes)
    head = b'GGUF' + struct.pack('<IQQ', version, len(tensors), len(kvs)) + b''.join(kvs)
    infos, data, off = b'', b'', 0
    for name, ne, t, raw in tensors:
        infos += s(name.encode()) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<q', d) for d in ne)
        infos += struct.pack('<IQ', t, off)
        pad = (-len(raw)) % alignment
        data += raw + b'\0' * pad
        off += len(raw) + pad
    body = head + infos
    body += b'\0' * ((-len(body)) % alignment)
    return body + data

def main(out):
    os.makedirs(out, exist_ok=True)
    every = [
        kv('u8', 0, struct.pack('<B', 7)), kv('i8', 1, struct.pack('<b', -7)),
        kv('u16', 2, struct.pack('<H', 700)), kv('i16', 3, struct.pack('<h', -700)),
        kv('u32', 4, struct.pack('<I', 70000)), kv('i32', 5, struct.pack('<i', -70000)),
        kv('f32', 6, struct.pack('<f', 1.5)), kv('bool', 7, b'\x01'),
        kv('str', 8, s(b'hello')), kv('u64', 10, struct.pack('<Q', 1 << 40)),
        kv('i64', 11, struct.pack('<q', -(1 << 40))), kv('f64', 12, struct.pack('<d', 2.5)),
        kv('arr_i32', 9, struct.pack('<IQ', 5, 3) + struct.pack('<3i', 1, 2, 3)),
        kv('arr_str', 9, struct.pack('<IQ', 8, 2) + s(b'a') + s(b'bc')),
        kv('general.alignment', 4, struct.pack('<I', 64)),
    ]
    f32 = struct.pack('<8f', *range(8))
    q8 = struct.pack('<H', 0x3c00) + bytes(range(32))
    with open(os.path.join(out, 'every_type.gguf'), 'wb') as f:
        f.write(gguf(every, [('a', [8], 0, f32), ('b', [32, 1], 8, q8)], alignment=64))
    # A complete tiny llama: 1 layer, n_embd 32, 2 heads, ff 32, vocab 4.
    E, F, V = 32, 32, 4
    meta = [kv('general.architecture', 8, s(b'llama')), kv('llama.block_count', 4, struct.pack('<I', 1)),
            kv('llama.embedding_length', 4, struct.pack('<I', E)),
            kv('llama.feed_forward_length', 4, struct.pack('<I', F)),
            kv('llama.attention.head_count', 4, struct.pack('<I', 2)),
            kv('llama.attention.layer_norm_rms_epsilon', 6, struct.pack('<f', 1e-5)),
            kv('llama.vocab_size', 4, struct.pack('<I', V))]
    def t(name, ne):
        n = 1
        for d in ne: n *= d
        return (name, ne, 0, struct.pack('<%df' % n, *([0.25] * n)))
    ts = [t('token_embd.weight', [E, V]), t('blk.0.attn_norm.weight', [E]),
          t('blk.0.attn_q.weight', [E, E]), t('blk.0.attn_k.weight', [E, E]),
          t('blk.0.attn_v.weight', [E, E]), t('blk.0.attn_output.weight', [E, E]),
          t('blk.0.ffn_norm.weight', [E]), t('blk.0.ffn_gate.weight', [E, F]),
          t('blk.0.ffn_up.weight', [E, F]), t('blk.0.ffn_down.weight', [F, E]),
          t('output_norm.weight', [E]), t('output.weight', [E, V])]
    with open(os.path.join(out, 'tiny_llama.gguf'), 'wb') as f:
        f.write(gguf(meta, ts))
    with open(os.path.join(out, 'empty_v2.gguf'), 'wb') as f:
        f.write(gguf([], [], version=2))

if __name__ == '__main__':
    main(sys.argv[1])
