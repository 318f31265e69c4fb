"""An OpenAI-compatible `POST /v1/embeddings` on loopback, answered by sentence-transformers
(the reference implementation of all-MiniLM-L6-v2) from the model directory osModa uses.

For `memory-bench --endpoint`: it embeds the bench's chunks through osmoda-memory's HTTP
backend (`HttpEmbedder`, the one `services.osmoda.memory.embeddingEndpoint` selects) where the
in-process candle model is too slow for 100k chunks on a small machine. Vectors are the
model's own (mean pooling + L2 normalisation, as modules.json declares).

Usage: python3 -m venv V && V/bin/pip install sentence-transformers
       V/bin/python crates/osmoda-memory/bench/st-server.py MODEL_DIR PORT
Prints "ready" once listening on 127.0.0.1:PORT.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/v1/embeddings":
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vecs = model.encode(texts, batch_size=64, normalize_embeddings=True)
        out = json.dumps({
            "object": "list",
            "model": body.get("model", ""),
            "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)],
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler)
print("ready", flush=True)
server.serve_forever()
