//! What the gateway logs, captured for the tests that read it. One process-wide subscriber, installed at
//! the first capture, writes each event to the capture of the thread it happens on (or nowhere). A scoped
//! subscriber (`set_default`) raced with the other tests of this binary: `tracing` caches each call site's
//! interest process-wide, and a call site first hit on another thread, where no subscriber was set, could
//! be cached as "never" and stay silent in the capturing test. With a global subscriber every call site is
//! of interest from the start, whichever thread hits it first.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, Once};

thread_local! {
    static CAPTURE: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
}

/// What one capture has collected so far; the capture ends when this is dropped.
pub(crate) struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    /// The log so far, as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

/// Starts capturing what this thread logs (text format, no colours), until the returned value is dropped.
/// Tests that read the log run on a current-thread runtime, so the gateway's events are on this thread.
pub(crate) fn capture() -> Captured {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(|| ThreadWriter).finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in the tests");
    });
    let bytes = Arc::new(Mutex::new(Vec::new()));
    CAPTURE.with(|c| *c.borrow_mut() = Some(bytes.clone()));
    Captured { bytes }
}

/// Writes to the current thread's capture, if any.
struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(bytes) = c.borrow().as_ref() {
                bytes.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
