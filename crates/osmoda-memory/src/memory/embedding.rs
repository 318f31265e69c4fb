//! Embedding, outside the writer lock: one thread at a time embeds the chunks waiting for a
//! vector, the others leave theirs to it. And the probe that notices an endpoint's model
//! swapped behind the same id: a fixed text sent with every batch, whose vector is recorded.

use std::sync::atomic::Ordering;
use std::sync::TryLockError;

use super::{lock, Memory, EMBED_STEP};
use crate::embed::Embedder;
use crate::error::{MemoryError, Result};
use crate::index::Index;

/// Sent with every batch to an embedder whose model may change behind its id: its vector
/// fingerprints the model.
const PROBE: &str = "osModa embedding probe: the nginx service on web-1 restarted after its TLS certificate expired.";
/// Least cosine between two probe vectors of one model (batching and hardware change the last
/// digits, another model changes far more).
const SAME_MODEL: f32 = 0.999;

impl Memory {
    /// Embed the chunks that lack a vector, unless another thread is doing so: then it
    /// takes these too (`more` tells it to look again before it stops), and this returns
    /// at once with 0. Returns the chunks this thread embedded.
    ///
    /// # Errors
    /// Embedding or index errors; the chunks stay pending (retried by the next sync).
    pub fn embed_pending(&self) -> Result<usize> {
        if self.embedder.is_none() {
            return Ok(0);
        }
        self.more.store(true, Ordering::SeqCst);
        let mut done = 0;
        loop {
            let _g = match self.embedding.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return Ok(done),
            };
            while self.more.swap(false, Ordering::SeqCst) {
                done += self.embed_all().inspect_err(|_| {
                    // Left for the next sync, which retries.
                    self.more.store(true, Ordering::SeqCst);
                })?;
            }
            drop(_g);
            // A sync that found the lock taken just before it was released: take its chunks.
            if !self.more.load(Ordering::SeqCst) {
                return Ok(done);
            }
        }
    }

    /// Whether chunks may be waiting for a vector that no thread is embedding (agentd then
    /// embeds them in the background).
    pub fn wants_embedding(&self) -> bool {
        self.embedder.is_some() && self.more.load(Ordering::SeqCst)
    }

    fn embed_all(&self) -> Result<usize> {
        let Some(emb) = &self.embedder else {
            return Ok(0);
        };
        let model = emb.id();
        let mut done = 0;
        loop {
            let batch = lock(&self.index).pending(EMBED_STEP)?;
            if batch.is_empty() {
                return Ok(done);
            }
            let texts: Vec<String> = batch.iter().map(|c| c.chunk.enriched()).collect();
            let (vecs, probe) = self.embed_probed(emb.as_ref(), &texts)?;
            let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
            let mut idx = lock(&self.index);
            // Checked and stored under one lock: the index only ever holds vectors of the
            // model whose probe it records.
            if let Some(p) = &probe {
                self.settle_probe(&mut idx, emb.as_ref(), p)?;
            }
            idx.set_vectors(&model, &ids, &vecs)?;
            done += ids.len();
        }
    }

    /// Embed `texts`; for an embedder whose model may change behind its id, with [`PROBE`]
    /// in front, whose vector comes back separately.
    pub(super) fn embed_probed(
        &self,
        emb: &dyn Embedder,
        texts: &[String],
    ) -> Result<(Vec<Vec<f32>>, Option<Vec<f32>>)> {
        let probed = emb.may_change();
        let all: Vec<String> = probed
            .then(|| PROBE.to_string())
            .into_iter()
            .chain(texts.iter().cloned())
            .collect();
        let mut vecs = emb.embed(&all)?;
        if vecs.len() != all.len() {
            return Err(MemoryError::Embed(format!(
                "{} vectors for {} texts",
                vecs.len(),
                all.len()
            )));
        }
        let probe = probed.then(|| vecs.remove(0));
        Ok((vecs, probe))
    }

    /// Compare the probe vector `p` just made with the one the index records: the first is
    /// recorded; another model's (cosine below [`SAME_MODEL`]) drops every vector, so all
    /// chunks are embedded again by this model, and the query cache is emptied.
    pub(super) fn settle_probe(
        &self,
        idx: &mut Index,
        emb: &dyn Embedder,
        p: &[f32],
    ) -> Result<()> {
        match idx.probe()? {
            None => idx.set_probe(p)?,
            Some(old) if old.len() == p.len() && crate::embed::dot(&old, p) >= SAME_MODEL => {}
            Some(old) => {
                let cos = if old.len() == p.len() {
                    format!("{:.3}", crate::embed::dot(&old, p))
                } else {
                    format!("n/a ({} and {} dimensions)", old.len(), p.len())
                };
                tracing::warn!(model = %emb.id(), %cos, "the model behind the embedder changed; every chunk is embedded again");
                idx.reset_vectors(format!(
                    "the model behind {} changed (probe cosine {cos}); every chunk is embedded again",
                    emb.id()
                ))?;
                idx.set_probe(p)?;
                self.cache.clear();
                self.more.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// For an embedder whose model may change behind its id: embed the probe and settle it
    /// (at open, so a model swapped while agentd was down is noticed before any recall).
    pub(super) fn check_model(&self) -> Result<()> {
        let Some(emb) = self.embedder.as_ref().filter(|e| e.may_change()) else {
            return Ok(());
        };
        let (_, probe) = self.embed_probed(emb.as_ref(), &[])?;
        if let Some(p) = probe {
            self.settle_probe(&mut lock(&self.index), emb.as_ref(), &p)?;
        }
        Ok(())
    }
}
