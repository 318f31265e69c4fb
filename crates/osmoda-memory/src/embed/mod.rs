//! Embedding backends behind one interface.
//!
//! [`Embedder`] turns texts into unit-length vectors (so a dot product is the cosine). Two
//! backends: [`LocalModel`] runs all-MiniLM-L6-v2 in process (candle, the default), and
//! [`HttpEmbedder`] calls an OpenAI-compatible `/v1/embeddings` endpoint (llama.cpp serving
//! nomic-embed-text-v2-moe, for instance). Every vector in the index records the
//! [`Embedder::id`] that made it; a different id triggers a re-embedding of every chunk.

mod http;
#[cfg(feature = "candle")]
mod local;

pub use http::HttpEmbedder;
#[cfg(feature = "candle")]
pub use local::LocalModel;

use crate::error::Result;

/// A text embedding model.
pub trait Embedder: Send + Sync {
    /// Identity of the model and its configuration; vectors from different ids never mix.
    fn id(&self) -> String;
    /// Embed `texts`; one unit-length vector per text, all of one length, in input order.
    ///
    /// # Errors
    /// [`crate::MemoryError::Embed`] when the model fails or answers malformed vectors.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
    /// Whether the model behind [`Embedder::id`] can change while the id stays the same (an
    /// endpoint serves whatever model it was last started with). Such an embedder's batches
    /// carry a fixed probe text whose vector fingerprints the model (see `Memory`).
    fn may_change(&self) -> bool {
        false
    }
    /// The relevance threshold measured for this model ([`crate::measured_min_similarity`]),
    /// if any: a threshold belongs to the model it was measured with.
    fn min_similarity(&self) -> Option<f32> {
        None
    }
}

/// Name of the in-process model, the one whose relevance threshold was measured.
pub const MINILM: &str = "all-MiniLM-L6-v2";

/// Scale `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Dot product (the cosine for unit vectors) over the common length of `a` and `b`.
///
/// Eight running sums instead of one: a single sum is a chain the compiler must keep in
/// order, eight independent ones become SIMD lanes (the exact search over every vector of
/// the index is this loop).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_matches_the_plain_sum() {
        for n in [0, 1, 7, 8, 9, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!(
                (f64::from(super::dot(&a, &b)) - plain).abs() < 1e-4,
                "n = {n}"
            );
        }
        assert_eq!(super::dot(&[1.0, 2.0, 3.0], &[1.0, 1.0]), 3.0);
    }
}
