//! Hybrid recall: BM25 (FTS5) and exact vector search fused by reciprocal rank fusion.

use std::collections::HashMap;

use crate::embed::dot;
use crate::index::Index;

/// The RRF constant (Cormack et al. 2009): score = Σ 1 / (k + rank).
pub const RRF_K: f64 = 60.0;

/// Which ranking to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// FTS5 BM25 only.
    Bm25,
    /// Vector similarity only.
    Vector,
    /// Both, fused by RRF.
    Hybrid,
}

/// One ranked candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// Chunk row id.
    pub id: i64,
    /// Fused score (RRF, or 1/(k+rank) of the single ranking).
    pub score: f64,
    /// Cosine similarity to the query, when vectors are available.
    pub similarity: Option<f32>,
    /// 1-based BM25 rank, if the chunk matched a query term.
    pub bm25_rank: Option<usize>,
    /// 1-based vector rank, if among the vector candidates.
    pub vector_rank: Option<usize>,
}

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from", "had",
    "has", "have", "how", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our",
    "that", "the", "their", "there", "this", "to", "was", "we", "were", "what", "when", "where",
    "which", "who", "why", "with", "you", "your",
];

/// The query's keyword terms: lower-cased alphanumeric words, stopwords dropped.
pub fn terms(query: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in query.split(|c: char| !c.is_alphanumeric()) {
        let w = w.to_lowercase();
        if !w.is_empty() && !STOPWORDS.contains(&w.as_str()) && !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// Exact nearest neighbours of `q` among vectors dated within `[since, until]`:
/// (row id, similarity), best first, ties by row id. Chunks tied with the last one kept are
/// kept too (up to `limit` more), so that [`rank`] decides which of them make the cut by
/// their place in the notes, not by row id.
pub(crate) fn nearest(
    index: &Index,
    q: &[f32],
    since: i64,
    until: i64,
    limit: usize,
) -> Vec<(i64, f32)> {
    let v = &index.vectors;
    if v.dims != q.len() {
        return Vec::new();
    }
    let mut all: Vec<(i64, f32)> = (0..v.len())
        .filter(|&i| v.ts[i] >= since && v.ts[i] <= until)
        .map(|i| (v.ids[i], dot(v.row(i), q)))
        .collect();
    let k = limit.min(all.len());
    if k == 0 {
        return Vec::new();
    }
    let cmp = |a: &(i64, f32), b: &(i64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    all.select_nth_unstable_by(k - 1, cmp);
    let last = all[k - 1].1;
    let (mut top, rest) = (all[..k].to_vec(), &all[k..]);
    // At most `limit` more: a degenerate model giving every text one vector ties them all.
    top.extend(
        rest.iter()
            .filter(|r| r.1.total_cmp(&last).is_eq())
            .take(limit),
    );
    top.sort_by(cmp);
    top
}

/// Rank chunks for `query` (terms from [`terms`], embedding `qvec` when a model is loaded)
/// within `[since, until]`; `depth` candidates per ranking. Ties in the fused score are
/// broken by row order of (path, ord) so a rebuilt index ranks identically.
pub(crate) fn rank(
    index: &Index,
    mode: Mode,
    query: &str,
    qvec: Option<&[f32]>,
    since: i64,
    until: i64,
    depth: usize,
) -> crate::Result<Vec<Ranked>> {
    let mut by_id: HashMap<i64, Ranked> = HashMap::new();
    if mode != Mode::Vector {
        let terms = terms(query);
        // Fused with vectors, a keyword vote needs at least half of the query's words: with
        // any one word enough, "the server room got too hot" votes for every note saying
        // "got" or "too", and RRF ranks those above a note the vectors found alone (a
        // paraphrase sharing no word with the query). Keyword-only ranking keeps every match.
        let need = if mode == Mode::Hybrid && qvec.is_some() {
            terms.len().div_ceil(2)
        } else {
            1
        };
        for (i, (id, _)) in index
            .bm25(&terms, since, until, depth)?
            .into_iter()
            .filter(|&(_, matched)| matched >= need)
            .enumerate()
        {
            let r = by_id.entry(id).or_insert_with(|| blank(id));
            r.bm25_rank = Some(i + 1);
            r.score += 1.0 / (RRF_K + (i + 1) as f64);
        }
    }
    if let Some(q) = qvec {
        if mode != Mode::Bm25 {
            // Equal similarities (the same text embedded twice: a repeated event of one day)
            // are ranked by (path, ord) like BM25's ties, never by row id: row ids follow
            // the order of writes and edits, and a rebuilt index numbers rows anew, so ranks
            // by id made a reindex reorder results.
            let mut near = nearest(index, q, since, until, depth);
            let place: HashMap<i64, (String, u32)> = index
                .get(&near.iter().map(|r| r.0).collect::<Vec<_>>())?
                .into_iter()
                .map(|c| (c.id, (c.chunk.path, c.chunk.ord)))
                .collect();
            near.sort_by(|a, b| {
                b.1.total_cmp(&a.1)
                    .then_with(|| place.get(&a.0).cmp(&place.get(&b.0)))
            });
            near.truncate(depth);
            for (i, (id, sim)) in near.into_iter().enumerate() {
                let r = by_id.entry(id).or_insert_with(|| blank(id));
                r.vector_rank = Some(i + 1);
                r.similarity = Some(sim);
                r.score += 1.0 / (RRF_K + (i + 1) as f64);
            }
        }
        // Similarity of BM25-only candidates, for the relevance threshold.
        let v = &index.vectors;
        if v.dims == q.len() {
            let pos: HashMap<i64, usize> = by_id
                .values()
                .filter(|r| r.similarity.is_none())
                .filter_map(|r| v.position(r.id).map(|i| (r.id, i)))
                .collect();
            for (id, i) in pos {
                if let Some(r) = by_id.get_mut(&id) {
                    r.similarity = Some(dot(v.row(i), q));
                }
            }
        }
    }
    let order: HashMap<i64, (String, u32)> = index
        .get(&by_id.keys().copied().collect::<Vec<_>>())?
        .into_iter()
        .map(|c| (c.id, (c.chunk.path, c.chunk.ord)))
        .collect();
    let mut out: Vec<Ranked> = by_id.into_values().collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| order.get(&a.id).cmp(&order.get(&b.id)))
    });
    Ok(out)
}

fn blank(id: i64) -> Ranked {
    Ranked {
        id,
        score: 0.0,
        similarity: None,
        bm25_rank: None,
        vector_rank: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::Chunk;

    /// Three notes: one sharing two common words with the query, one sharing three of its
    /// five words, one sharing none but closest in meaning (its vector).
    fn index(dir: &std::path::Path) -> (Index, Vec<f32>) {
        let mut idx = Index::open(&dir.join("i.sqlite"), Some("m")).expect("open");
        let texts = [
            "postgres got too many clients",
            "the server room fan failed, hot closet",
            "temperature alarm in the closet",
        ];
        let chunks: Vec<Chunk> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Chunk {
                path: "MEMORY.md".into(),
                ord: i as u32,
                line_start: i as u32 + 1,
                line_end: i as u32 + 1,
                heading: String::new(),
                text: (*t).into(),
                ts: 0,
            })
            .collect();
        idx.replace_file("MEMORY.md", Some("1"), &chunks)
            .expect("replace");
        let p = idx.pending(10).expect("pending");
        let vec_of = |t: &str| -> Vec<f32> {
            match t {
                t if t.starts_with("postgres") => vec![0.0, 1.0],
                t if t.starts_with("the server") => vec![0.6, 0.8],
                _ => vec![1.0, 0.0],
            }
        };
        let vecs: Vec<Vec<f32>> = p.iter().map(|c| vec_of(&c.chunk.text)).collect();
        idx.set_vectors("m", &p.iter().map(|c| c.id).collect::<Vec<_>>(), &vecs)
            .expect("set");
        (idx, vec![1.0, 0.0])
    }

    fn texts(idx: &Index, ranked: &[Ranked]) -> Vec<(String, Option<usize>)> {
        ranked
            .iter()
            .map(|r| {
                let text = idx.get(&[r.id]).expect("get")[0].chunk.text.clone();
                (text, r.bm25_rank)
            })
            .collect()
    }

    /// Fused with vectors, a chunk holding fewer than half of the query's words gets no
    /// keyword vote; one holding half or more does; keyword-only ranking keeps every match.
    #[test]
    fn a_keyword_vote_needs_half_of_the_query_words_when_fused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (idx, q) = index(tmp.path());
        let query = "the server room got too hot"; // server, room, got, too, hot: 3 needed
        let fused =
            rank(&idx, Mode::Hybrid, query, Some(&q), i64::MIN, i64::MAX, 10).expect("rank");
        let got = texts(&idx, &fused);
        // With a vote for two common words, "postgres …" (vector rank 3) would rank above the
        // closest note (vector rank 1, no keyword).
        let order: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            order,
            [
                "the server room fan failed, hot closet",
                "temperature alarm in the closet",
                "postgres got too many clients"
            ]
        );
        let vote = |t: &str| got.iter().find(|g| g.0 == t).map(|g| g.1);
        assert_eq!(vote("postgres got too many clients"), Some(None), "{got:?}");
        assert_eq!(
            vote("the server room fan failed, hot closet"),
            Some(Some(1)),
            "{got:?}"
        );
        // Without a query vector (no model): every match counts, best BM25 first.
        let keyword = rank(&idx, Mode::Hybrid, query, None, i64::MIN, i64::MAX, 10).expect("rank");
        let got = texts(&idx, &keyword);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "the server room fan failed, hot closet");
        assert_eq!(got[1], ("postgres got too many clients".into(), Some(2)));
        // BM25 mode: the same.
        let bm25 = rank(&idx, Mode::Bm25, query, Some(&q), i64::MIN, i64::MAX, 10).expect("rank");
        assert_eq!(texts(&idx, &bm25).len(), 2);
        // One- and two-word queries: one word is half.
        for query in ["clients", "postgres hot"] {
            let fused =
                rank(&idx, Mode::Hybrid, query, Some(&q), i64::MIN, i64::MAX, 10).expect("rank");
            assert!(
                fused.iter().filter(|r| r.bm25_rank.is_some()).count() >= 1,
                "{query}: {:?}",
                texts(&idx, &fused)
            );
        }
    }

    #[test]
    fn terms_drop_stopwords_and_punctuation() {
        assert_eq!(
            terms("Why did nginx.service fail?"),
            vec!["nginx", "service", "fail"]
        );
        assert_eq!(terms("\"OR\" NEAR( * )"), vec!["near"]);
        assert!(terms("the and of").is_empty());
        assert_eq!(terms("Ünïcode ünïcode 42"), vec!["ünïcode", "42"]);
    }
}
