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
}

/// Scale `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Dot product (the cosine for unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
