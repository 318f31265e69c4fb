//! `/system/query` `service` and `journal`: one systemd unit's state (`systemctl show`) and its
//! journal (`journalctl -o json`). Both answer 503 "unavailable here" where systemd is absent.

use std::path::Path;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// The `systemctl show` properties `service` returns.
pub const SERVICE_PROPERTIES: &[&str] = &[
    "Id",
    "Description",
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "MainPID",
    "ExecMainStatus",
    "Result",
    "NRestarts",
    "ActiveEnterTimestamp",
    "FragmentPath",
];

/// Most journal lines one query returns.
pub const MAX_LINES: u32 = 1000;

fn unavailable(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{what} is unavailable here: systemd is not running on this machine"),
    )
    .with_detail(json!({ "hint": "on NixOS this reads systemd" }))
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").exists()
}

/// A unit name as systemd spells them (`nginx.service`, `getty@tty1.service`); a bare name
/// means `<name>.service`. Never starts with `-` (it would read as an option).
fn unit_name(raw: &str) -> Result<String, ApiError> {
    let ok = !raw.is_empty()
        && raw.len() <= 256
        && !raw.starts_with('-')
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._:-\\".contains(&b));
    if !ok {
        return Err(ApiError::bad_request(format!(
            "unit {raw:?} is not a systemd unit name (letters, digits, `@._:-\\`, not starting with `-`)"
        )));
    }
    Ok(if raw.contains('.') {
        raw.to_string()
    } else {
        format!("{raw}.service")
    })
}

/// Arguments of `service`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceArgs {
    /// Unit name, e.g. `nginx` or `nginx.service`.
    pub unit: String,
}

/// `service` → `{Id, Description, LoadState, ActiveState, SubState, ...}` ([`SERVICE_PROPERTIES`]);
/// 404 when systemd does not know the unit.
pub async fn service(a: ServiceArgs) -> Result<Value, ApiError> {
    let unit = unit_name(&a.unit)?;
    if !systemd_running() {
        return Err(unavailable("service status"));
    }
    let out = tokio::process::Command::new("systemctl")
        .args(["show", "--no-pager"])
        .arg(format!("--property={}", SERVICE_PROPERTIES.join(",")))
        .arg("--")
        .arg(&unit)
        .output()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot run systemctl: {e}"),
            )
        })?;
    if !out.status.success() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "systemctl show failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let props = parse_show(&String::from_utf8_lossy(&out.stdout));
    if props.get("LoadState").and_then(Value::as_str) == Some("not-found") {
        return Err(ApiError::not_found(format!("systemd has no unit {unit}")));
    }
    Ok(Value::Object(props))
}

/// `Key=Value` lines of `systemctl show` → a JSON object of strings.
pub fn parse_show(text: &str) -> Map<String, Value> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect()
}

/// Arguments of `journal`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalArgs {
    /// Only this unit.
    pub unit: Option<String>,
    /// journalctl's `--since` (`2026-01-01 10:00`, `1 hour ago`, `today`).
    pub since: Option<String>,
    /// Most severe-first cut-off: `0`..`7` or `emerg`..`debug`.
    pub priority: Option<String>,
    /// Newest lines to return (default 100, at most [`MAX_LINES`]).
    pub lines: Option<u32>,
}

const PRIORITIES: &[&str] = &[
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// `journal` → `[{ts, unit, priority, pid, message}]`, oldest first.
pub async fn journal(a: JournalArgs) -> Result<Value, ApiError> {
    let mut args: Vec<String> = vec!["--no-pager".into(), "--output=json".into()];
    let lines = a.lines.unwrap_or(100);
    if lines == 0 || lines > MAX_LINES {
        return Err(ApiError::bad_request(format!(
            "lines must be 1..={MAX_LINES}"
        )));
    }
    args.push(format!("--lines={lines}"));
    if let Some(u) = &a.unit {
        args.push(format!("--unit={}", unit_name(u)?));
    }
    if let Some(s) = &a.since {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" :+-.".contains(&b));
        if !ok {
            return Err(ApiError::bad_request(
                "`since` must be a journalctl time such as `2026-01-01 10:00` or `1 hour ago`",
            ));
        }
        args.push(format!("--since={s}"));
    }
    if let Some(p) = &a.priority {
        if !(PRIORITIES.contains(&p.as_str())
            || matches!(p.as_str(), "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7"))
        {
            return Err(ApiError::bad_request("`priority` must be 0..7 or one of emerg, alert, crit, err, warning, notice, info, debug")
                .with_detail(json!({ "valid": PRIORITIES })));
        }
        args.push(format!("--priority={p}"));
    }
    if !systemd_running() {
        return Err(unavailable("the journal"));
    }
    let out = tokio::process::Command::new("journalctl")
        .args(&args)
        .output()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot run journalctl: {e}"),
            )
        })?;
    if !out.status.success() {
        return Err(ApiError::bad_request(format!(
            "journalctl failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(Value::Array(parse_journal(&String::from_utf8_lossy(
        &out.stdout,
    ))))
}

/// journalctl's JSON lines → `[{ts, unit, priority, pid, message}]`. `MESSAGE` may be a byte
/// array (non-UTF-8 messages); it is decoded lossily. Lines that are not JSON are skipped.
pub fn parse_journal(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
            let message = match e.get("MESSAGE") {
                Some(Value::String(m)) => m.clone(),
                Some(Value::Array(bytes)) => {
                    let b: Vec<u8> = bytes
                        .iter()
                        .filter_map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
                        .collect();
                    String::from_utf8_lossy(&b).into_owned()
                }
                _ => String::new(),
            };
            let ts = s("__REALTIME_TIMESTAMP")
                .and_then(|us| us.parse::<i128>().ok())
                .and_then(|us| time::OffsetDateTime::from_unix_timestamp_nanos(us * 1000).ok())
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
            json!({
                "ts": ts,
                "unit": s("_SYSTEMD_UNIT").or_else(|| s("UNIT")),
                "priority": s("PRIORITY").and_then(|p| p.parse::<u8>().ok()),
                "pid": s("_PID").and_then(|p| p.parse::<u32>().ok()),
                "message": message,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        assert_eq!(unit_name("nginx").ok(), Some("nginx.service".into()));
        assert_eq!(
            unit_name("getty@tty1.service").ok(),
            Some("getty@tty1.service".into())
        );
        assert_eq!(
            unit_name("sys-devices.device").ok(),
            Some("sys-devices.device".into())
        );
        for bad in ["", "-H host", "a b", "a;reboot", "a/b", &"x".repeat(300)] {
            assert!(unit_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn systemctl_show_output() {
        let p = parse_show(
            "Id=nginx.service\nActiveState=failed\nExecMainStatus=1\nDescription=Nginx = fast\n",
        );
        assert_eq!(p["ActiveState"], "failed");
        assert_eq!(p["Description"], "Nginx = fast");
    }

    #[test]
    fn journal_json_lines() {
        // Two lines as journalctl -o json prints them (one with a binary MESSAGE), and garbage.
        let text = concat!(
            r#"{"__REALTIME_TIMESTAMP":"1764374400123456","PRIORITY":"3","_PID":"812","_SYSTEMD_UNIT":"nginx.service","MESSAGE":"bind() to 0.0.0.0:80 failed"}"#,
            "\n",
            r#"{"__REALTIME_TIMESTAMP":"1764374401000000","PRIORITY":"6","UNIT":"nginx.service","MESSAGE":[104,105,255]}"#,
            "\nnot json\n"
        );
        let v = parse_journal(text);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0],
            json!({ "ts": "2025-11-29T00:00:00.123456Z", "unit": "nginx.service", "priority": 3, "pid": 812, "message": "bind() to 0.0.0.0:80 failed" })
        );
        assert_eq!(v[1]["message"], "hi\u{fffd}");
        assert_eq!(v[1]["unit"], "nginx.service");
    }
}
