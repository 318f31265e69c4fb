//! Prometheus metrics of an osModa daemon, served as OpenMetrics text on `GET /metrics` by every
//! listener of [`crate::server::serve`].
//!
//! One registry per process ([`global`]); each daemon is its own process. Other crates count
//! their events through the small API of [`Metrics`] (`edit`, `switch_finished`, `watcher_check`,
//! `ledger_commit`), one call site each; the HTTP counters are kept by the listener itself.
//!
//! Families (all counters end in `_total`):
//! - `osmoda_http_requests_total{listener,route,status}` — `route` is the route template
//!   (`/incident/{id}`), `(unmatched)` or `(protocol error)`;
//! - `osmoda_connections_refused_total{listener}` — over a connection cap;
//! - `osmoda_connections_open{listener}` — connections open now;
//! - `osmoda_ledger_appends_total` and the histogram `osmoda_ledger_commit_events` — events per
//!   group commit;
//! - `osmoda_config_edits_total{outcome}`, `osmoda_switches_total{state}`,
//!   `osmoda_watcher_checks_total{result}`, `osmoda_routine_runs_total{state}`;
//! - `osmoda_keyd_signatures_total{chain,kind}`, `osmoda_keyd_denials_total{reason}`;
//! - `osmoda_egress_decisions_total{outcome,reason}`, `osmoda_egress_tunnels_open`;
//! - `osmoda_voice_requests_total{kind,outcome}`;
//! - osmoda-mesh: `osmoda_mesh_links_open`, `osmoda_mesh_links_total{direction}` (links up),
//!   `osmoda_mesh_link_closes_total{reason}`, `osmoda_mesh_handshakes_total{direction,outcome}`,
//!   `osmoda_mesh_rekeys_total{direction}`, `osmoda_mesh_frames_total{direction}` and
//!   `osmoda_mesh_frame_bytes_total{direction}` (sealed frames on links, keepalives included),
//!   `osmoda_mesh_messages_total{direction,kind}` (what peers said: text, json, request, ...).

use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The listener a request came in on (request extension set by the server).
#[derive(Debug, Clone, Copy)]
pub struct Listener(pub &'static str);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    listener: &'static str,
    route: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// The metrics of this process (see the module docs for the families).
pub struct Metrics {
    registry: Registry,
    http: Family<HttpLabels, Counter>,
    refused: Family<ListenerLabel, Counter>,
    open: Family<ListenerLabel, Gauge>,
    appends: Counter,
    commit_events: Histogram,
    edits: Family<OutcomeLabel, Counter>,
    switches: Family<StateLabel, Counter>,
    checks: Family<ResultLabel, Counter>,
    routine_runs: Family<StateLabel, Counter>,
    signatures: Family<SignatureLabels, Counter>,
    denials: Family<ReasonLabel, Counter>,
    egress: Family<DecisionLabels, Counter>,
    tunnels: Gauge,
    voice: Family<VoiceLabels, Counter>,
    mesh: MeshFamilies,
}

/// osmoda-mesh's families (see the module docs).
#[derive(Default)]
struct MeshFamilies {
    links_open: Gauge,
    links: Family<DirectionLabel, Counter>,
    closes: Family<ReasonLabel, Counter>,
    handshakes: Family<HandshakeLabels, Counter>,
    rekeys: Family<DirectionLabel, Counter>,
    frames: Family<DirectionLabel, Counter>,
    frame_bytes: Family<DirectionLabel, Counter>,
    messages: Family<MessageLabels, Counter>,
}

impl MeshFamilies {
    fn register(&self, r: &mut Registry) {
        r.register(
            "mesh_links_open",
            "Links osmoda-mesh holds up now",
            self.links_open.clone(),
        );
        r.register(
            "mesh_links",
            "Links established, by who dialed (outbound, inbound)",
            self.links.clone(),
        );
        r.register(
            "mesh_link_closes",
            "Links closed, by reason",
            self.closes.clone(),
        );
        r.register(
            "mesh_handshakes",
            "Handshakes by direction and outcome (ok, refused, silent, unreachable, limited)",
            self.handshakes.clone(),
        );
        r.register(
            "mesh_rekeys",
            "Link rekeys, by direction of the key (send, receive)",
            self.rekeys.clone(),
        );
        r.register(
            "mesh_frames",
            "Sealed frames on links, by direction (sent, received)",
            self.frames.clone(),
        );
        r.register(
            "mesh_frame_bytes",
            "Bytes of sealed frames on links, by direction",
            self.frame_bytes.clone(),
        );
        r.register(
            "mesh_messages",
            "Messages peers exchanged, by direction and kind (text, json, request, response, rotate)",
            self.messages.clone(),
        );
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    direction: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    direction: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VoiceLabels {
    kind: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignatureLabels {
    chain: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// Label values are chosen by code, but clamp them anyway so that no caller can grow the
/// registry without bound through a label.
fn label(s: &str) -> String {
    s.chars()
        .take(48)
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect()
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("osmoda");
        let http = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by listener, route template and status",
            http.clone(),
        );
        let refused = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections refused at once because a connection cap was reached",
            refused.clone(),
        );
        let open = Family::<ListenerLabel, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections open now, by listener",
            open.clone(),
        );
        let appends = Counter::default();
        registry.register(
            "ledger_appends",
            "Events appended to the ledger",
            appends.clone(),
        );
        let commit_events = Histogram::new(exponential_buckets(1.0, 4.0, 7));
        registry.register(
            "ledger_commit_events",
            "Events written per ledger group commit (one transaction)",
            commit_events.clone(),
        );
        let edits = Family::<OutcomeLabel, Counter>::default();
        registry.register("config_edits", "Config edits by outcome", edits.clone());
        let switches = Family::<StateLabel, Counter>::default();
        registry.register(
            "switches",
            "SafeSwitch runs by final state",
            switches.clone(),
        );
        let checks = Family::<ResultLabel, Counter>::default();
        registry.register("watcher_checks", "Watcher checks by result", checks.clone());
        let routine_runs = Family::<StateLabel, Counter>::default();
        registry.register(
            "routine_runs",
            "Routine runs by final status",
            routine_runs.clone(),
        );
        let signatures = Family::<SignatureLabels, Counter>::default();
        registry.register(
            "keyd_signatures",
            "Signatures keyd released, by chain and kind",
            signatures.clone(),
        );
        let denials = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "keyd_denials",
            "keyd requests the policy denied, by rule",
            denials.clone(),
        );
        let egress = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "egress_decisions",
            "CONNECT requests osmoda-egress allowed or denied, by reason",
            egress.clone(),
        );
        let tunnels = Gauge::default();
        registry.register(
            "egress_tunnels_open",
            "Tunnels osmoda-egress holds open now",
            tunnels.clone(),
        );
        let voice = Family::<VoiceLabels, Counter>::default();
        registry.register(
            "voice_requests",
            "osmoda-voice work by kind (transcribe, speak, record, utterance) and outcome",
            voice.clone(),
        );
        let mesh = MeshFamilies::default();
        mesh.register(&mut registry);
        Metrics {
            mesh,
            voice,
            egress,
            tunnels,
            signatures,
            denials,
            registry,
            http,
            refused,
            open,
            appends,
            commit_events,
            edits,
            switches,
            checks,
            routine_runs,
        }
    }

    /// Counts one answered request.
    pub fn http_request(&self, listener: &'static str, route: &str, status: u16) {
        self.http
            .get_or_create(&HttpLabels {
                listener,
                route: label(route),
                status: status.to_string(),
            })
            .inc();
    }

    /// Counts one connection refused over a cap.
    pub fn connection_refused(&self, listener: &'static str) {
        self.refused
            .get_or_create(&ListenerLabel { listener })
            .inc();
    }

    /// Adds `delta` (+1 or -1) to the open connections of `listener`.
    pub fn connections_open(&self, listener: &'static str, delta: i64) {
        self.open
            .get_or_create(&ListenerLabel { listener })
            .inc_by(delta);
    }

    /// Records one ledger group commit of `events` events.
    pub fn ledger_commit(&self, events: usize) {
        self.appends.inc_by(events as u64);
        self.commit_events.observe(events as f64);
    }

    /// Counts one config edit by outcome (`committed`, `refused`, `invalid`, `failed`, ...).
    pub fn edit(&self, outcome: &str) {
        self.edits
            .get_or_create(&OutcomeLabel {
                outcome: label(outcome),
            })
            .inc();
    }

    /// Counts one SafeSwitch run by its final state (`committed`, `rolled-back`, `failed`).
    pub fn switch_finished(&self, state: &str) {
        self.switches
            .get_or_create(&StateLabel {
                state: label(state),
            })
            .inc();
    }

    /// Counts one watcher check by result (`pass`, `fail`, ...).
    pub fn watcher_check(&self, result: &str) {
        self.checks
            .get_or_create(&ResultLabel {
                result: label(result),
            })
            .inc();
    }

    /// Counts one routine run by its final status (`ok`, `failed`, `skipped`).
    pub fn routine_run(&self, status: &str) {
        self.routine_runs
            .get_or_create(&StateLabel {
                state: label(status),
            })
            .inc();
    }

    /// Counts one signature keyd released (`chain` = `ethereum`/`solana`, `kind` =
    /// `transaction`, `personal_sign`, ...).
    pub fn keyd_signature(&self, chain: &str, kind: &str) {
        self.signatures
            .get_or_create(&SignatureLabels {
                chain: label(chain),
                kind: label(kind),
            })
            .inc();
    }

    /// Counts one request keyd's policy denied, by the rule that denied it.
    pub fn keyd_denial(&self, reason: &str) {
        self.denials
            .get_or_create(&ReasonLabel {
                reason: label(reason),
            })
            .inc();
    }

    /// Counts one egress decision (`outcome` = `allow`/`deny`, `reason` = the rule).
    pub fn egress_decision(&self, outcome: &'static str, reason: &str) {
        self.egress
            .get_or_create(&DecisionLabels {
                outcome,
                reason: label(reason),
            })
            .inc();
    }

    /// Changes the number of open egress tunnels by `delta`.
    pub fn egress_tunnels(&self, delta: i64) {
        self.tunnels.inc_by(delta);
    }

    /// Counts one piece of osmoda-voice work (`kind` = `transcribe`, `speak`, `record`,
    /// `utterance`; `outcome` = `ok`, `error`, `abandoned` (a transcription whose caller left),
    /// `delivered`, `undelivered`).
    pub fn voice(&self, kind: &str, outcome: &str) {
        self.voice
            .get_or_create(&VoiceLabels {
                kind: label(kind),
                outcome: label(outcome),
            })
            .inc();
    }

    /// A mesh link came up (`direction`: `outbound` when this host dialed, else `inbound`).
    pub fn mesh_link_up(&self, direction: &'static str) {
        self.mesh
            .links
            .get_or_create(&DirectionLabel { direction })
            .inc();
        self.mesh.links_open.inc();
    }

    /// A mesh link closed, for `reason` (a fixed word chosen by osmoda-mesh).
    pub fn mesh_link_down(&self, reason: &'static str) {
        self.mesh
            .closes
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
        self.mesh.links_open.dec();
    }

    /// One mesh handshake ended (`outcome`: `ok`, `refused`, `silent`, `unreachable`, `limited`).
    pub fn mesh_handshake(&self, direction: &'static str, outcome: &'static str) {
        self.mesh
            .handshakes
            .get_or_create(&HandshakeLabels { direction, outcome })
            .inc();
    }

    /// A mesh link switched the key of one direction (`send`, `receive`).
    pub fn mesh_rekey(&self, direction: &'static str) {
        self.mesh
            .rekeys
            .get_or_create(&DirectionLabel { direction })
            .inc();
    }

    /// A sealed frame of `bytes` went over a mesh link (`sent`, `received`).
    pub fn mesh_frame(&self, direction: &'static str, bytes: usize) {
        let l = DirectionLabel { direction };
        self.mesh.frames.get_or_create(&l).inc();
        self.mesh.frame_bytes.get_or_create(&l).inc_by(bytes as u64);
    }

    /// A peer message of `kind` was sent or received.
    pub fn mesh_message(&self, direction: &'static str, kind: &'static str) {
        self.mesh
            .messages
            .get_or_create(&MessageLabels { direction, kind })
            .inc();
    }

    /// The registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// This process's metrics.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

/// `GET /metrics`: the registry as OpenMetrics text (Prometheus reads it).
pub async fn handler() -> Response {
    let mut resp = global().encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

async fn count(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)".to_string(), |m| m.as_str().to_string());
    let listener = req.extensions().get::<Listener>().map_or("?", |l| l.0);
    let resp = next.run(req).await;
    global().http_request(listener, &route, resp.status().as_u16());
    resp
}

/// Adds `GET /metrics` to `app` and counts every request it answers.
pub fn instrument(app: Router) -> Router {
    app.route("/metrics", axum::routing::get(handler))
        .layer(axum::middleware::from_fn(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_as_openmetrics() {
        let m = Metrics::new();
        m.http_request("agent", "/incident/{id}", 404);
        m.ledger_commit(3);
        m.edit("committed");
        m.switch_finished("rolled-back");
        m.watcher_check("fail\n{bad}");
        m.mesh_link_up("outbound");
        m.mesh_link_up("inbound");
        m.mesh_link_down("silent");
        m.mesh_handshake("inbound", "refused");
        m.mesh_frame("sent", 100);
        m.mesh_frame("sent", 28);
        m.mesh_rekey("send");
        m.mesh_message("received", "text");
        let text = m.encode();
        for line in [
            r#"osmoda_http_requests_total{listener="agent",route="/incident/{id}",status="404"} 1"#,
            "osmoda_ledger_appends_total 3",
            r#"osmoda_ledger_commit_events_bucket{le="4.0"} 1"#,
            r#"osmoda_config_edits_total{outcome="committed"} 1"#,
            r#"osmoda_switches_total{state="rolled-back"} 1"#,
            r#"osmoda_watcher_checks_total{result="fail_{bad}"} 1"#,
            "osmoda_mesh_links_open 1",
            r#"osmoda_mesh_links_total{direction="outbound"} 1"#,
            r#"osmoda_mesh_link_closes_total{reason="silent"} 1"#,
            r#"osmoda_mesh_handshakes_total{direction="inbound",outcome="refused"} 1"#,
            r#"osmoda_mesh_frames_total{direction="sent"} 2"#,
            r#"osmoda_mesh_frame_bytes_total{direction="sent"} 128"#,
            r#"osmoda_mesh_rekeys_total{direction="send"} 1"#,
            r#"osmoda_mesh_messages_total{direction="received",kind="text"} 1"#,
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
