//! systemd's readiness protocol (`Type=notify`): `READY=1` once every
//! listener is bound and serving, `STOPPING=1` when a drain starts, and
//! `WATCHDOG=1` at half the interval when the unit sets `WatchdogSec`.
//! Without `NOTIFY_SOCKET` (not under systemd) each call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(state: &[NotifyState], what: &str) {
    if let Err(e) = sd_notify::notify(state) {
        // The relay runs on; systemd will say the unit timed out.
        tracing::warn!("cannot tell systemd {what}: {e}");
    }
}

/// Every listener is bound and serving.
pub fn ready() {
    send(
        &[NotifyState::Ready, NotifyState::Status("serving")],
        "READY=1",
    );
}

/// A reload has started; [`ready`] says it is done.
pub fn reloading() {
    send(
        &[NotifyState::Reloading, NotifyState::Status("reloading")],
        "RELOADING=1",
    );
}

/// A drain has started.
pub fn stopping() {
    send(
        &[NotifyState::Stopping, NotifyState::Status("draining")],
        "STOPPING=1",
    );
}

/// With `WatchdogSec` set, pings systemd at half the interval until `stop`;
/// a relay whose runtime hangs stops pinging and is restarted.
pub fn watchdog(stop: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog], "WATCHDOG=1"),
            }
        }
    });
}
