//! Identity hand-overs that survive a crash. `POST /identity/rotate` seals the new identity and
//! the hand-over owed to each peer in one transaction (`Store::rotate_to`) before it sends
//! anything; a hand-over is forgotten once it was written on a link its peer authenticated with
//! the identity it hands over from, or once the peer accepted this host's identity now. After a
//! crash between the two, the dialer reaches each peer still owed one as the previous identity
//! (the one that peer knows) every other attempt and [`deliver`]s it on that link.

use serde_json::json;

use crate::link::LinkHandle;
use crate::message::MeshMessage;
use crate::AppState;

/// Sends `link`'s peer the hand-overs it is owed and can verify on this link, in order; drops
/// those it no longer needs. Returns how many were sent.
///
/// # Errors
/// Why a hand-over could not be sent (it stays owed).
pub async fn deliver(st: &AppState, link: &LinkHandle) -> Result<usize, String> {
    let _one = st.handing.lock().await;
    let peer = &link.info.peer;
    let owed: Vec<_> = st
        .store
        .handovers()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|h| &h.peer == peer)
        .collect();
    if owed.is_empty() {
        return Ok(0);
    }
    let now = st.identity().x25519_public;
    let known = link.info.mine();
    // The peer knows this host as `known`: hand-overs from an older identity are behind it.
    let Some(from) = owed.iter().position(|h| h.old_x25519 == known) else {
        if known == now {
            for h in &owed {
                st.store.handover_done(h.seq).map_err(|e| e.to_string())?;
            }
        }
        return Ok(0);
    };
    for h in &owed[..from] {
        st.store.handover_done(h.seq).map_err(|e| e.to_string())?;
    }
    let mut sent = 0;
    for h in &owed[from..] {
        let m: MeshMessage = serde_json::from_str(&h.message)
            .map_err(|e| format!("owed hand-over {} is unreadable: {e}", h.seq))?;
        let MeshMessage::Rotate { new, .. } = &m else {
            return Err(format!("owed hand-over {} is not a hand-over", h.seq));
        };
        let next = crate::identity::Keys::decode(new)?.x25519;
        link.send(m.clone()).await?;
        link.info.set_mine(next);
        st.store.handover_done(h.seq).map_err(|e| e.to_string())?;
        sent += 1;
    }
    st.agentd
        .event(
            "identity.handover",
            json!({ "peer": peer, "sent": sent, "session": link.info.session }),
        )
        .await;
    Ok(sent)
}
