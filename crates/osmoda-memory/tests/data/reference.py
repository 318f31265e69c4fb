"""An independent cross-check of the golden embeddings in golden.json (which come from
sentence-transformers, the model's own reference implementation: reference-st.py).

This is a plain numpy forward pass of
BERT (the architecture in config.json) over model.safetensors, followed by the pooling the
model declares in 1_Pooling/config.json (mean over non-padding tokens) and the Normalize
module in modules.json (L2). Token ids come from the model's tokenizer.json via the Python
`tokenizers` package. Nothing here shares code with the Rust (candle) implementation.

Its vectors agree with sentence-transformers 3.4.1 (torch 2.15) to within 1e-7 per component
(cosine 1.0000000 for each sentence; `reference-st.py MODEL_DIR --check`).

Usage: python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy safetensors tokenizers
       /tmp/v/bin/python reference.py MODEL_DIR
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "nginx failed to start after the TLS certificate expired",
    "The backup of /var/lib/postgresql runs every night at 02:00.",
    "I prefer short answers and metric units.",
]


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    # BERT's "gelu" is the exact erf form.
    from math import erf, sqrt

    verf = np.vectorize(erf)
    return 0.5 * x * (1.0 + verf(x / sqrt(2.0)))


def embed(model_dir, text):
    cfg = json.load(open(f"{model_dir}/config.json"))
    w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    # tokenizer.json pads to a fixed length; the pooling only ever sees real tokens.
    tok.no_padding()
    tok.no_truncation()
    ids = tok.encode(text).ids[:256]
    n = len(ids)
    eps = cfg["layer_norm_eps"]
    h = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n] + w["embeddings.token_type_embeddings.weight"][0]
    h = layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    heads = cfg["num_attention_heads"]
    d = cfg["hidden_size"] // heads
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda x, name: x @ w[p + name + ".weight"].T + w[p + name + ".bias"]
        q = lin(h, "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = lin(h, "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = lin(h, "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, heads * d)
        h = layer_norm(lin(a, "attention.output.dense") + h, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        f = lin(gelu(lin(h, "intermediate.dense")), "output.dense")
        h = layer_norm(f + h, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    pooled = h.mean(0)
    return ids, (pooled / np.linalg.norm(pooled)).tolist()


def main():
    model_dir = sys.argv[1]
    out = []
    for s in SENTENCES:
        ids, vec = embed(model_dir, s)
        out.append({"text": s, "token_ids": ids, "embedding": [round(x, 7) for x in vec]})
    json.dump({"model": "sentence-transformers/all-MiniLM-L6-v2", "reference": "numpy forward pass (reference.py)", "sentences": out}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
