"""Vector stores for osmoda-memory, compared on the memory's own vectors (issue 17 item 3).

Input: the files `memory-bench --export DIR` writes: vectors-N.f32 (N x 384 unit vectors of
real chunks, all-MiniLM-L6-v2) and queries-N.f32 (200 query vectors), little-endian f32.

For each store the index is built in one process and queried in a fresh one, which loads only
the stored index and the queries, so its VmRSS is what serving costs. Reported: build seconds,
recall@10 against exact search (numpy, float64), query p50/p99 (top 10, one query at a time),
serving RSS (what opening and querying added to a Python process with numpy loaded), and the size on disk.

Stores: exact (numpy matrix in RAM: what osmoda-memory does in Rust), sqlite-vec (vec0, in
the SQLite file beside FTS5; brute force), ZVEC (PyPI zvec, the engine behind npm @zvec/zvec:
HNSW and flat), usearch (HNSW).

`--derive M` compares the stores on M vectors derived from the N real ones instead, for sizes
the model cannot embed on a small machine (100k chunks take hours here): each derived vector
is a random convex mix of three real vectors (Dirichlet(1,1,1) weights) plus Gaussian noise
(σ = 0.02 per component), L2-normalised, so it stays in the span and the clusters of the
model's real output; the 200 real query vectors are the queries. Exact search's cost does not
depend on the vectors; an approximate index's recall does, so its figure on derived vectors is
an estimate.

Usage: python3 -m venv V && V/bin/pip install numpy zvec sqlite-vec apsw usearch
       V/bin/python crates/osmoda-memory/bench/vector-stores.py DIR N [--derive M]
(Debian's python3 sqlite3 cannot load extensions; apsw can.)
"""
import os

# One query at a time on one core for every store (numpy's BLAS would start threads).
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import json
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

DIM = 384
K = 10


def load(path):
    return np.fromfile(path, dtype="<f4").reshape(-1, DIM)


def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def du(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


# --- stores: build(vectors, path) and open(path) -> search(q) -> list of row numbers ---------


def exact_build(v, path):
    v.astype("<f4").tofile(path)


def exact_open(path):
    m = np.fromfile(path, dtype="<f4").reshape(-1, DIM)

    def search(q):
        s = m @ q
        top = np.argpartition(-s, K)[:K]
        return top[np.argsort(-s[top])].tolist()

    return search


def sqlite_vec_conn(path):
    import apsw
    import sqlite_vec

    c = apsw.Connection(path)
    c.enable_load_extension(True)
    c.load_extension(sqlite_vec.loadable_path())
    return c


def sqlite_vec_build(v, path):
    c = sqlite_vec_conn(path)
    c.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIM}] distance_metric=cosine)")
    with c:
        c.executemany(
            "INSERT INTO v(rowid, embedding) VALUES (?, ?)",
            ((i, row.astype("<f4").tobytes()) for i, row in enumerate(v)),
        )


def sqlite_vec_open(path):
    c = sqlite_vec_conn(path)

    def search(q):
        rows = c.execute(
            f"SELECT rowid FROM v WHERE embedding MATCH ? AND k = {K} ORDER BY distance",
            (q.astype("<f4").tobytes(),),
        )
        return [r[0] for r in rows]

    return search


def zvec_build(kind):
    def build(v, path):
        import zvec

        param = zvec.HnswIndexParam(metric_type=zvec.MetricType.IP, m=32, ef_construction=200) if kind == "hnsw" else zvec.FlatIndexParam(metric_type=zvec.MetricType.IP)
        schema = zvec.CollectionSchema(
            name="memory",
            vectors=zvec.VectorSchema("embedding", zvec.DataType.VECTOR_FP32, DIM, index_param=param),
        )
        col = zvec.create_and_open(path=path, schema=schema)
        step = 1000
        for s in range(0, len(v), step):
            col.insert([zvec.Doc(id=str(i), vectors={"embedding": v[i].tolist()}) for i in range(s, min(s + step, len(v)))])
        col.optimize()
        col.flush()

    return build


def zvec_open(kind):
    def open_(path):
        import zvec

        col = zvec.open(path=path)
        param = zvec.HnswQueryParam(ef=100) if kind == "hnsw" else None

        def search(q):
            res = col.query(zvec.Query(field_name="embedding", vector=q.tolist(), param=param), topk=K, output_fields=[])
            return [int(d.id) for d in res]

        return search

    return open_


def usearch_build(v, path):
    from usearch.index import Index

    ix = Index(ndim=DIM, metric="ip", dtype="f32")
    ix.add(np.arange(len(v)), v)
    ix.save(path)


def usearch_open(path):
    from usearch.index import Index

    ix = Index.restore(path, view=False)

    def search(q):
        return [int(k) for k in ix.search(q, K).keys]

    return search


STORES = {
    "exact (numpy, f32 in RAM)": (exact_build, exact_open),
    "sqlite-vec 0.1.9 (vec0, brute force)": (sqlite_vec_build, sqlite_vec_open),
    "zvec 0.8.0 flat": (zvec_build("flat"), zvec_open("flat")),
    "zvec 0.8.0 HNSW (M 32, efC 200, ef 100)": (zvec_build("hnsw"), zvec_open("hnsw")),
    "usearch 2.26 HNSW (defaults)": (usearch_build, usearch_open),
}


def child(name, path, qfile, truth_file):
    base = rss_mib()
    search = STORES[name][1](path)
    qs = load(qfile)
    truth = json.load(open(truth_file))
    ms, hits = [], 0
    for q, t in zip(qs, truth):
        t0 = time.perf_counter()
        got = search(q)
        ms.append((time.perf_counter() - t0) * 1000)
        hits += len(set(got) & set(t))
    ms.sort()
    p = lambda x: ms[min(len(ms) - 1, int(len(ms) * x))]
    print(json.dumps({
        "recall@10": hits / (K * len(qs)),
        "p50_ms": p(0.5),
        "p99_ms": p(0.99),
        # What opening and querying the store added to a process that had numpy loaded.
        "rss_mib": rss_mib() - base,
    }))


def derive(real, m, seed=17):
    """`m` unit vectors, each a Dirichlet mix of three rows of `real` plus N(0, 0.02²) noise."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(real), size=(m, 3))
    w = rng.dirichlet(np.ones(3), size=m).astype(np.float32)
    out = np.einsum("mk,mkd->md", w, real[picks]) + rng.normal(0, 0.02, size=(m, DIM)).astype(np.float32)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        return child(*sys.argv[2:])
    d, n = sys.argv[1], sys.argv[2]
    v = load(f"{d}/vectors-{n}.f32")
    qs = load(f"{d}/queries-{n}.f32")
    if sys.argv[3:4] == ["--derive"]:
        v = derive(v, int(sys.argv[4]))
        print(f"{len(v)} vectors derived from {n} real ones (--derive)")
    exact = v.astype(np.float64) @ qs.astype(np.float64).T
    truth = [np.argsort(-exact[:, j], kind="stable")[:K].tolist() for j in range(len(qs))]
    work = tempfile.mkdtemp(prefix="vector-stores-")
    truth_file = f"{work}/truth.json"
    json.dump(truth, open(truth_file, "w"))
    print(f"{len(v)} vectors, {len(qs)} queries, top {K}; load {os.getloadavg()[0]:.1f}")
    print(f"{'store':40} {'build s':>8} {'recall@10':>9} {'p50 ms':>8} {'p99 ms':>8} {'+RSS MiB':>8} {'disk MiB':>9}")
    try:
        for name, (build, _) in STORES.items():
            path = f"{work}/{len(os.listdir(work))}"
            t0 = time.perf_counter()
            build(v, path)
            secs = time.perf_counter() - t0
            out = subprocess.run([sys.executable, __file__, "--child", name, path, f"{d}/queries-{n}.f32", truth_file], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{name:40} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{name:40} {secs:8.1f} {r['recall@10']:9.4f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rss_mib']:8.1f} {du(path) / 2**20:9.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
