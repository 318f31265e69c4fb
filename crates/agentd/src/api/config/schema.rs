//! Edits under `services.osmoda` checked against the module's option schema
//! (`osmoda_config::options`, rendered from `modules/osmoda.nix`) before anything is written:
//! an unknown option (with a did-you-mean), a wrong type or a value outside an enum is a 422
//! naming the option path and what is allowed, and the ledger, tree and history stay as they were.

use axum::http::StatusCode;
use osmoda_config::options::{self, OptionError};
use osmoda_nix::{Op, Value as NixValue};
use serde_json::{json, Value};

use crate::error::ApiError;

/// True if `op` edits osModa's own options (so a raw value is worth evaluating to JSON).
pub fn concerns(op: &Op) -> bool {
    let segs: Vec<&str> = super::plan::path_of(op)
        .segments()
        .iter()
        .map(String::as_str)
        .collect();
    options::concerns(&segs)
}

/// Checks `op` against the schema. `evaluated` is a raw value's JSON when it was evaluated;
/// a raw value that could not be (it names `pkgs`, `lib`, …) has only its path checked.
/// An unset is not checked: removing a misspelt option a person wrote must stay possible.
///
/// # Errors
/// 422 with `detail.option`, `detail.expected` and, when one is close, `detail.did_you_mean`.
pub fn check(op: &Op, evaluated: Option<&Value>) -> Result<(), ApiError> {
    let segs: Vec<&str> = super::plan::path_of(op)
        .segments()
        .iter()
        .map(String::as_str)
        .collect();
    let value = |v: &NixValue| match v {
        NixValue::Json(j) => Some(j.clone()),
        NixValue::Raw(_) => evaluated.cloned(),
    };
    let verdict = match op {
        Op::Set(_, v) => options::check(&segs, value(v).as_ref()),
        Op::Append(_, v) | Op::Remove(_, v) => options::check_element(&segs, value(v).as_ref()),
        Op::Unset(_) => Ok(()),
    };
    verdict.map_err(refusal)
}

fn refusal(e: OptionError) -> ApiError {
    let mut detail = json!({
        "option": e.option,
        "expected": e.expected,
        "hint": "the options are those modules/osmoda.nix declares (see docs/api.md, \"Option schema\"); nothing was changed",
    });
    if let (Some(d), Some(o)) = (&e.did_you_mean, detail.as_object_mut()) {
        o.insert("did_you_mean".into(), json!(d));
    }
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("not a valid osModa option edit: {e}"),
    )
    .with_detail(detail)
}
