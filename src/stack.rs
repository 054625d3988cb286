//! Running the front end on a thread with a large stack.
//!
//! Parsing, lowering and checking recurse over the syntax tree. Nesting is capped (see
//! `syntax::scan` and `syntax::lower`), but within the cap a debug build's frames can still
//! exceed the 2 MiB stack of a test thread or the 8 MiB of a main thread. The public entry
//! points therefore run on a thread of their own with [`STACK_SIZE`] bytes of stack (virtual
//! memory: only the pages touched are committed).

use std::sync::Mutex;

/// Stack size of the front-end thread.
pub const STACK_SIZE: usize = 256 << 20;

/// Runs `f` on a thread with a large stack and returns its result; a panic in `f` is
/// propagated to the caller unchanged. If no thread can be started, `f` runs here.
pub fn with_big_stack<T: Send, F: FnOnce() -> T + Send>(f: F) -> T {
    let slot = Mutex::new(Some(f));
    let take = || slot.lock().ok().and_then(|mut g| g.take());
    let spawned = std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("mapga-front-end".into())
            .stack_size(STACK_SIZE)
            .spawn_scoped(s, || take().map(|f| f()));
        handle.ok().map(|h| match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        })
    });
    match spawned.flatten() {
        Some(v) => v,
        None => match take() {
            Some(f) => f(),
            None => unreachable!("the closure runs exactly once"),
        },
    }
}
