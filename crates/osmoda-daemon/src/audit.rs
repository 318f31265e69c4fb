//! Issue 11's error-text rule, shared by every daemon's `tests/error_texts.rs` audit: a refusal
//! is a 4xx whose body is exactly `{error, detail}`, `error` a sentence that names what was wrong
//! (the row's needles) and `detail` null or an object; no Debug dump or Rust type name, no
//! internal error, and none of the daemon's own paths (state dir, sockets, config) unless the
//! request named them itself.

use serde_json::Value;

/// Text that shows a Debug dump, a Rust type or an internal error leaking into an answer.
pub const LEAKS: &[&str] = &[
    "Some(",
    "None)",
    "Os {",
    "kind: ",
    "Error {",
    "Custom {",
    "struct ",
    "ENOENT",
    "internal error",
    "panicked",
    "Failed to deserialize",
    "untagged enum",
];

/// A Rust path (`osmoda_keyd::Error`, `std::io`): `::` between identifier characters (an IPv6
/// address such as `::1` or `[::]` is not one).
fn rust_path(text: &str) -> bool {
    let b = text.as_bytes();
    text.match_indices("::").any(|(i, _)| {
        let before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let after = b
            .get(i + 2)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
        before && after
    })
}

/// Checks one refusal: `what` names the request (method, path, body) in the failure text;
/// `status` and `body` are the answer; `private` the daemon's own paths. Returns the `error`
/// text, or every way the answer breaks the rule.
///
/// # Errors
/// A text per broken rule (not JSON, other keys, a short or non-string `error`, a `detail` that
/// is neither null nor an object, a status outside 4xx, a leak from [`LEAKS`], a private path).
pub fn check_refusal(
    what: &str,
    status: u16,
    body: &Value,
    private: &[String],
) -> Result<String, String> {
    let obj = body
        .as_object()
        .ok_or_else(|| format!("{what}: not a JSON object: {body}"))?;
    let mut keys: Vec<&String> = obj.keys().collect();
    keys.sort();
    if keys != ["detail", "error"] {
        return Err(format!("{what}: not {{error, detail}}: {body}"));
    }
    let error = obj["error"]
        .as_str()
        .ok_or_else(|| format!("{what}: error is not a string: {body}"))?;
    if error.len() < 12 {
        return Err(format!("{what}: too short to say anything: {error:?}"));
    }
    if !(obj["detail"].is_null() || obj["detail"].is_object()) {
        return Err(format!(
            "{what}: detail is neither null nor an object: {body}"
        ));
    }
    if !(400..500).contains(&status) {
        return Err(format!("{what}: status {status} is not a refusal: {body}"));
    }
    let text = body.to_string();
    for leak in LEAKS {
        if text.contains(leak) && !what.contains(leak) {
            return Err(format!(
                "{what}: a Debug dump, Rust name or internal error ({leak}): {body}"
            ));
        }
    }
    if rust_path(&text) {
        return Err(format!("{what}: a Rust path (`a::b`): {body}"));
    }
    for p in private.iter().filter(|p| !what.contains(p.as_str())) {
        if text.contains(p.as_str()) {
            return Err(format!("{what}: names the daemon's own path {p}: {body}"));
        }
    }
    Ok(error.to_string())
}

/// [`check_refusal`] plus the row's expectations: the status wanted and the words the `error`
/// must contain. Returns the failures (empty when the answer keeps the rule).
///
/// A row may want a failure (5xx: an upstream, resolver or other party failed, a limit is
/// full): that answer is no refusal, but its body keeps the same rule.
pub fn audit_row(
    what: &str,
    (status, body): (u16, &Value),
    want: u16,
    needles: &[&str],
    private: &[String],
) -> Vec<String> {
    if status != want {
        return vec![format!("{what}: status {status} (wanted {want}): {body}")];
    }
    let judged_as = if (500..600).contains(&want) {
        400
    } else {
        status
    };
    match check_refusal(what, judged_as, body, private) {
        Err(e) => vec![e],
        Ok(error) => needles
            .iter()
            .filter(|n| !error.contains(**n))
            .map(|n| format!("{what}: {error:?} does not name {n:?}"))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_rule_catches_each_kind_of_bad_answer() {
        let private = vec!["/var/lib/osmoda/keyd".to_string()];
        let good = json!({"error": "wallet_id: no wallet w_1; GET /wallet/list", "detail": {"kind": "not_found"}});
        assert_eq!(
            audit_row(
                "GET /x",
                (404, &good),
                404,
                &["w_1", "/wallet/list"],
                &private
            ),
            Vec::<String>::new()
        );
        for (status, body) in [
            (400, json!("text")),
            (
                400,
                json!({"error": "bad request body", "detail": null, "x": 1}),
            ),
            (400, json!({"error": "short", "detail": null})),
            (
                400,
                json!({"error": "a list is not a detail", "detail": []}),
            ),
            (500, json!({"error": "the database broke", "detail": null})),
            (
                400,
                json!({"error": "Os { code: 2, kind: NotFound }", "detail": null}),
            ),
            (
                400,
                json!({"error": "expected struct SignBody here", "detail": null}),
            ),
            (
                400,
                json!({"error": "osmoda_keyd::Error happened", "detail": null}),
            ),
            (
                400,
                json!({"error": "cannot open /var/lib/osmoda/keyd/keys.db", "detail": null}),
            ),
        ] {
            assert!(
                check_refusal("POST /y", status, &body, &private).is_err(),
                "{body}"
            );
        }
        assert!(check_refusal(
            "CONNECT [::1]:1",
            403,
            &json!({"error": "[::1]:1 is not allowed here", "detail": null}),
            &private
        )
        .is_ok());
        // A request that names a path itself may see it again; a wrong status or missing word fails.
        let echoed = json!({"error": "no such route /var/lib/osmoda/keyd", "detail": null});
        assert!(check_refusal("GET /var/lib/osmoda/keyd", 404, &echoed, &private).is_ok());
        assert_eq!(
            audit_row("GET /x", (400, &good), 404, &[], &private).len(),
            1
        );
        assert_eq!(
            audit_row("GET /x", (404, &good), 404, &["w_2"], &private).len(),
            1
        );
        // A wanted failure keeps the body rule; an unwanted one is still a failure.
        let failed = json!({"error": "resolving a.test failed: no such name", "detail": null});
        assert!(audit_row(
            "CONNECT a.test:1",
            (502, &failed),
            502,
            &["a.test"],
            &private
        )
        .is_empty());
        assert_eq!(
            audit_row("GET /x", (500, &failed), 400, &[], &private).len(),
            1
        );
        let dump =
            json!({"error": "connect: Os { code: 111, kind: ConnectionRefused }", "detail": null});
        assert_eq!(
            audit_row("CONNECT a.test:1", (502, &dump), 502, &[], &private).len(),
            1
        );
    }
}
