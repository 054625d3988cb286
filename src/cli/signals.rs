//! SIGINT and SIGTERM during a run: stop cleanly, then exit with the conventional code.
//!
//! [`install`] replaces the default action (end the process at once, leaving a half-written
//! staging folder) with a handler that records the signal. Runs poll [`received`] through their
//! observer and stop at the next node or iteration; the command then keeps the partial outputs
//! apart from the last good results and exits with 128 + the signal's number (130 for Ctrl-C,
//! 143 for SIGTERM). A second signal ends the process at once, as a user pressing Ctrl-C twice
//! expects; what it leaves is removed by the next run in that folder.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received, 0 when none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

#[cfg(unix)]
#[allow(unsafe_code)]
extern "C" fn on_signal(signal: libc::c_int) {
    if RECEIVED.swap(signal, Ordering::SeqCst) != 0 {
        // SAFETY: signal and raise are async-signal-safe; the default action ends the process.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// Installs the handler for SIGINT and SIGTERM (idempotent).
pub fn install() {
    #[cfg(unix)]
    #[allow(unsafe_code)]
    // SAFETY: the handler only touches an atomic and calls async-signal-safe functions.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// The signal received since [`install`], if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The signal's name and the exit code for it (128 + its number).
pub fn describe(signal: i32) -> (String, u8) {
    #[cfg(unix)]
    let name = match signal {
        libc::SIGINT => "SIGINT (Ctrl-C)".to_string(),
        libc::SIGTERM => "SIGTERM".to_string(),
        s => format!("signal {s}"),
    };
    #[cfg(not(unix))]
    let name = format!("signal {signal}");
    (name, 128u8.saturating_add(signal.clamp(0, 127) as u8))
}
