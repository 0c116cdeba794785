//! Ctrl-C / SIGTERM handling.
//!
//! Once [`install`] has run, SIGINT and SIGTERM no longer kill xtask outright. Instead the
//! handler sets a flag; the main thread notices it in [`crate::cmd::wait`], stops its
//! foreground child and returns an [`Interrupted`] error, which `main` turns into exit
//! code 130. xtask runs no background process: OpenBao servers belong to the tests,
//! which stop them when they exit.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

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

static REQUESTED: AtomicBool = AtomicBool::new(false);
static INSTALLED: OnceLock<()> = OnceLock::new();

/// Install the SIGINT/SIGTERM handler (idempotent).
pub fn install() -> Result<()> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    ctrlc::set_handler(|| {
        REQUESTED.store(true, Ordering::SeqCst);
        eprintln!("xtask: interrupted; stopping");
    })
    .context("installing the Ctrl-C handler")?;
    let _ = INSTALLED.set(());
    Ok(())
}

/// Whether an interrupt has been received.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
