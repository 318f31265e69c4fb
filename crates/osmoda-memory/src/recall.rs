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
/// (row id, similarity), best first, ties by row id.
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
    all.truncate(k);
    all.sort_by(cmp);
    all
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
            for (i, (id, sim)) in nearest(index, q, since, until, depth)
                .into_iter()
                .enumerate()
            {
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
                .filter_map(|r| v.ids.binary_search(&r.id).ok().map(|i| (r.id, i)))
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
