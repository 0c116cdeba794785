//! Ctrl-C / SIGTERM handling.
//!
//! Once [`install`] has run, SIGINT and SIGTERM no longer kill xtask outright. Instead the
//! handler sets a flag and immediately stops every registered background process (the
//! OpenBao dev server); the main thread notices the flag in [`crate::cmd::wait`], stops
//! its foreground child and returns an [`Interrupted`] error, which `main` turns into exit
//! code 130. A panic or a normal return stops the server through its `Drop` guard.

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use anyhow::{Context, Result};

/// A background child shared between its owner (a Drop guard) and the signal handler.
pub type Slot = Arc<Mutex<Option<Child>>>;

/// The error returned when the user interrupted a step.
#[derive(Debug)]
pub struct Interrupted {
    /// The step that was running.
    pub step: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} interrupted", self.step)
    }
}

impl std::error::Error for Interrupted {}

#[derive(Default)]
struct State {
    requested: AtomicBool,
    background: Mutex<Vec<Slot>>,
}

static STATE: OnceLock<State> = OnceLock::new();
static INSTALLED: OnceLock<()> = OnceLock::new();

fn state() -> &'static State {
    STATE.get_or_init(State::default)
}

/// Install the SIGINT/SIGTERM handler (idempotent).
pub fn install() -> Result<()> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    ctrlc::set_handler(|| {
        let state = state();
        state.requested.store(true, Ordering::SeqCst);
        eprintln!("xtask: interrupted; stopping background processes");
        let slots = state
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for slot in slots {
            stop(&slot);
        }
    })
    .context("installing the Ctrl-C handler")?;
    let _ = INSTALLED.set(());
    Ok(())
}

/// Whether an interrupt has been received.
pub fn requested() -> bool {
    state().requested.load(Ordering::SeqCst)
}

/// Register a background child so the signal handler stops it.
pub fn register(slot: &Slot) {
    state()
        .background
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::clone(slot));
}

/// Forget a background child (after it was stopped).
pub fn unregister(slot: &Slot) {
    state()
        .background
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|s| !Arc::ptr_eq(s, slot));
}

/// Kill and reap the child in `slot`, if it is still there. Returns its pid if this call
/// stopped it. Safe to call from several places: only the first one finds the child.
pub fn stop(slot: &Slot) -> Option<u32> {
    let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
    let mut child = guard.take()?;
    let pid = child.id();
    let _ = child.kill();
    let _ = child.wait();
    Some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn stop_kills_once() {
        let child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let slot: Slot = Arc::new(Mutex::new(Some(child)));
        register(&slot);
        assert_eq!(stop(&slot), Some(pid));
        assert_eq!(stop(&slot), None);
        unregister(&slot);
        assert!(
            !state()
                .background
                .lock()
                .expect("not poisoned")
                .iter()
                .any(|s| Arc::ptr_eq(s, &slot))
        );
        // The process is gone (reaped): /proc has no entry for it.
        #[cfg(target_os = "linux")]
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
