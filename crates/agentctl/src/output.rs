//! Human-readable rendering of agentd responses (tables), with `--json` as the escape hatch.

use serde_json::Value;

/// Print `v` as JSON or through `table`.
pub fn print(v: &Value, json: bool, table: fn(&Value) -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", table(v));
    }
}

/// Percent-encode a query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn gib(v: &Value) -> String {
    format!("{:.1} GiB", v.as_f64().unwrap_or(0.0) / (1u64 << 30) as f64)
}

/// `health` as a few lines.
pub fn health(v: &Value) -> String {
    format!(
        "cpu     {}% of {} cores\nram     {}% used ({} available of {})\ndisk /  {}% used ({} available)\nload    {}\nuptime  {:.0} s\n",
        s(&v["cpu"]["usage_percent"]), s(&v["cpu"]["cores"]),
        s(&v["ram"]["used_percent"]), gib(&v["ram"]["available_bytes"]), gib(&v["ram"]["total_bytes"]),
        s(&v["disk"]["used_percent"]), gib(&v["disk"]["available_bytes"]),
        v["load"].as_array().map(|l| l.iter().map(s).collect::<Vec<_>>().join(" ")).unwrap_or_default(),
        v["uptime"].as_f64().unwrap_or(0.0),
    )
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// Events as a table, oldest first.
pub fn events(v: &Value) -> String {
    let mut rows: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
    rows.reverse();
    let mut out = format!(
        "{:>6}  {:<24}  {:<24}  {:<36}  {}\n",
        "ID", "TIME", "TYPE", "ACTOR", "PAYLOAD"
    );
    for e in rows {
        out.push_str(&format!(
            "{:>6}  {:<24}  {:<24}  {:<36}  {}\n",
            s(&e["id"]),
            s(&e["ts"]),
            truncate(&s(&e["type"]), 24),
            truncate(&s(&e["actor"]), 36),
            truncate(&s(&e["payload"]), 60)
        ));
    }
    out
}

/// Approval tickets as a table.
pub fn approvals(v: &Value) -> String {
    let mut out = format!(
        "{:<32}  {:<8}  {:<20}  {}\n",
        "ID", "STATUS", "EXPIRES", "OPERATION / DETAIL"
    );
    for t in v.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<32}  {:<8}  {:<20}  {} — {}\n",
            s(&t["id"]),
            s(&t["status"]),
            s(&t["expires_at"]),
            truncate(&t["operation"].to_string(), 60),
            s(&t["detail"])
        ));
    }
    out
}

/// Generations as `git log --oneline`-like lines.
pub fn generations(v: &Value) -> String {
    let mut out = String::new();
    for g in v.as_array().into_iter().flatten() {
        let tags = g["tags"]
            .as_array()
            .map(|t| t.iter().map(s).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        out.push_str(&format!(
            "{}  {}  {:<28}  {}{}\n",
            s(&g["short"]),
            s(&g["timestamp"]),
            truncate(&s(&g["author"]["name"]), 28),
            s(&g["reason"]).lines().next().unwrap_or(""),
            if tags.is_empty() {
                String::new()
            } else {
                format!("  [{tags}]")
            }
        ));
    }
    out
}

/// The result of an edit that landed (or of `config init`).
pub fn landed(v: &Value) -> String {
    let g = &v["generation"];
    let mut out = format!(
        "generation {}  {}\n",
        s(&g["short"]),
        s(&g["reason"]).lines().next().unwrap_or("")
    );
    if let Some(dir) = v["dir"].as_str() {
        out.push_str(&format!("tree at {dir}\n"));
    }
    if v["event_id"].is_number() {
        out.push_str(&format!(
            "ledger events {} (requested) and {} (committed)\n",
            s(&v["requested_event"]),
            s(&v["event_id"])
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencode_escapes_reserved_bytes() {
        assert_eq!(urlencode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(urlencode("switch.*"), "switch.*");
    }
}
