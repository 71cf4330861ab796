//! OS signals: the only place the supervisor hears SIGINT, SIGTERM and
//! SIGHUP. They become messages for the loop, which decides what they mean
//! (Ctrl-C once: drain; twice, or SIGTERM: stop the agents).

use super::*;

/// SIGINT → Interrupt (the dispatcher counts them); SIGTERM and SIGHUP →
/// Terminate.
pub(super) fn spawn_os_signals(tx: mpsc::UnboundedSender<Msg>) {
    use tokio::signal::unix::{signal, SignalKind};
    let t = tx.clone();
    tokio::spawn(async move {
        if let Ok(mut s) = signal(SignalKind::interrupt()) {
            while s.recv().await.is_some() {
                if t.send(Msg::Interrupt).is_err() {
                    break;
                }
            }
        }
    });
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
    ] {
        let t = tx.clone();
        tokio::spawn(async move {
            if let Ok(mut s) = signal(kind) {
                while s.recv().await.is_some() {
                    if t.send(Msg::Terminate(name)).is_err() {
                        break;
                    }
                }
            }
        });
    }
}
