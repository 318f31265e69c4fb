//! An OpenAI-compatible embeddings endpoint (`POST /v1/embeddings`), e.g. llama.cpp's server.

use std::time::Duration;

use serde::Deserialize;

use crate::error::{MemoryError, Result};

/// Texts per request.
const BATCH: usize = 32;

/// Client of an OpenAI-compatible `/v1/embeddings` endpoint. Plain `http://` only (the
/// endpoint is meant to be a loopback service); vectors are L2-normalised on arrival.
#[derive(Debug)]
pub struct HttpEmbedder {
    url: String,
    model: String,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

/// `url` without its user information (`http://user:password@host/…` → `http://host/…`): the
/// endpoint's address appears in ids, errors and `/memory/health`, its credentials nowhere.
fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

impl HttpEmbedder {
    /// A client for the full endpoint `url` (e.g. `http://127.0.0.1:8080/v1/embeddings`)
    /// asking for `model`.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] when `url` is not an `http://` URL.
    pub fn new(url: &str, model: &str) -> Result<Self> {
        if !url.starts_with("http://") {
            return Err(MemoryError::Invalid(format!(
                "embedding endpoint {url:?}: only http:// (a loopback service) is supported"
            )));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(HttpEmbedder {
            url: url.to_string(),
            model: model.to_string(),
            agent,
        })
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let e = |what: String| MemoryError::Embed(format!("{}: {what}", shown(&self.url)));
        let body = serde_json::json!({ "model": self.model, "input": texts });
        let mut resp = self
            .agent
            .post(&self.url)
            .send_json(&body)
            .map_err(|x| e(x.to_string()))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|x| e(x.to_string()))?;
        if !status.is_success() {
            let snippet: String = text.chars().take(300).collect();
            return Err(e(format!("HTTP {status}: {snippet}")));
        }
        let parsed: Response =
            serde_json::from_str(&text).map_err(|x| e(format!("bad response: {x}")))?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for item in parsed.data {
            let slot = out
                .get_mut(item.index)
                .ok_or_else(|| e(format!("index {} out of range", item.index)))?;
            *slot = Some(item.embedding);
        }
        let mut vecs: Vec<Vec<f32>> = out
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.ok_or_else(|| e(format!("no embedding for input {i}"))))
            .collect::<Result<_>>()?;
        let dims = vecs.first().map_or(0, Vec::len);
        if dims == 0
            || vecs
                .iter()
                .any(|v| v.len() != dims || v.iter().any(|x| !x.is_finite()))
        {
            return Err(e("vectors of unequal length, empty or not finite".into()));
        }
        vecs.iter_mut().for_each(|v| super::normalize(v));
        Ok(vecs)
    }
}

impl super::Embedder for HttpEmbedder {
    fn id(&self) -> String {
        format!("endpoint:{}@{}", self.model, shown(&self.url))
    }

    fn may_change(&self) -> bool {
        true
    }

    /// The measured threshold of the model the endpoint is asked for, by its name (an
    /// endpoint serving all-MiniLM-L6-v2 gets that model's; others none).
    fn min_similarity(&self) -> Option<f32> {
        crate::measured_min_similarity(&self.model)
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            out.extend(self.embed_batch(batch)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_of_the_endpoint_are_never_shown() {
        for (url, shown) in [
            (
                "http://user:hunter2@127.0.0.1:8080/v1/embeddings",
                "http://127.0.0.1:8080/v1/embeddings",
            ),
            ("http://:tok@h/v1", "http://h/v1"),
            ("http://h:1/v1", "http://h:1/v1"),
            ("http://a@b@h", "http://h"),
        ] {
            assert_eq!(super::shown(url), shown);
        }
    }
}
