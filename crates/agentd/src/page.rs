//! Paging of agentd's list endpoints: a bounded default size, and a cursor.
//!
//! Every list answers a JSON array of at most `limit` items (default [`DEFAULT_LIMIT`]). When the
//! page is full, the `x-next-cursor` header carries the id of its last item: pass it back as
//! `after_id` (or as `before_id` for `order=desc`) for the next page. A page shorter than `limit`
//! is the last one.

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Items per page when the caller names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` of the incident and approval lists (the ledger's own lists allow 10,000).
pub const MAX_LIMIT: usize = 1000;
/// Response header holding the cursor of the next page.
pub const NEXT_CURSOR: &str = "x-next-cursor";

/// The page size for `requested`, at most `max`.
///
/// # Errors
/// 400 when `requested` is 0 or above `max`.
pub fn limit(requested: Option<usize>, max: usize) -> Result<usize, ApiError> {
    match requested {
        None => Ok(DEFAULT_LIMIT.min(max)),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {max}, not {n}"
        ))
        .with_detail(serde_json::json!({ "hint": "page with the x-next-cursor header" }))),
    }
}

/// Query parameters of a list with nothing but paging (`?after_id=&limit=`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params<C> {
    /// Cursor: only items after this id (from `x-next-cursor`).
    pub after_id: Option<C>,
    /// Page size (default [`DEFAULT_LIMIT`]).
    pub limit: Option<usize>,
}

/// One page of a list: its items and, when it is full, the cursor of the next page.
#[derive(Debug)]
pub struct Page<T> {
    /// The items, in list order.
    pub items: Vec<T>,
    /// Id of the last item, when more may follow.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page of `items` (already cut to `limit`); `id` gives an item's cursor value.
    pub fn new<C: ToString>(items: Vec<T>, limit: usize, id: impl Fn(&T) -> C) -> Page<T> {
        let next = if items.len() >= limit {
            items.last().map(|t| id(t).to_string())
        } else {
            None
        };
        Page { items, next }
    }

    /// The page of `all` (in ascending order of `id`) after cursor `after`, of at most `limit`.
    pub fn after<C: Ord + ToString>(
        all: impl IntoIterator<Item = T>,
        after: Option<&C>,
        limit: usize,
        id: impl Fn(&T) -> C,
    ) -> Page<T> {
        let items: Vec<T> = all
            .into_iter()
            .filter(|t| after.is_none_or(|a| id(t) > *a))
            .take(limit)
            .collect();
        Page::new(items, limit, id)
    }
}

impl<T: Serialize> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        let mut resp = axum::Json(self.items).into_response();
        if let Some(next) = self.next {
            if let Ok(v) = HeaderValue::from_str(&next) {
                resp.headers_mut().insert(NEXT_CURSOR, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors() {
        assert_eq!(limit(None, 1000).ok(), Some(100));
        assert_eq!(limit(Some(5), 1000).ok(), Some(5));
        assert!(limit(Some(0), 1000).is_err());
        assert!(limit(Some(1001), 1000).is_err());
        assert_eq!(
            Page::new(vec![1, 2, 3], 3, |x| *x).next.as_deref(),
            Some("3")
        );
        assert_eq!(Page::new(vec![1, 2], 3, |x| *x).next, None);
        let p = Page::after(1..=10, Some(&4), 3, |x| *x);
        assert_eq!((p.items, p.next.as_deref()), (vec![5, 6, 7], Some("7")));
        let last = Page::after(1..=10, Some(&8), 3, |x| *x);
        assert_eq!((last.items, last.next), (vec![9, 10], None));
    }
}
