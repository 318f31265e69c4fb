//! HTTP/1.1 + JSON client for osModa daemons over Unix sockets, and the durable event
//! [`Reporter`] every daemon uses to send its events to agentd's ledger.

mod error;
mod http;
mod reporter;
mod spool;

pub use error::ClientError;
pub use http::{
    valid_action_label, Client, Response, ACTION_HEADER, DAEMON_HEADER, DEFAULT_TIMEOUT,
};
pub use hyper::Method;
pub use reporter::{Reporter, RetryPolicy, MAX_PAYLOAD_BYTES};
pub use spool::REJECTED_DIR;
