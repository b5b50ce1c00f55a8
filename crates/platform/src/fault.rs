//! Fault injection for crash tests: `FAULT_POINTS=name[@n],...` aborts the
//! process the n-th time (default first) execution reaches the named point.
//! Unset (the default), every point is a no-op.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    remaining: HashMap<String, (u64, AtomicU64)>,
}

fn armed() -> &'static Option<Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let raw = crate::settings::Env::process().get(&crate::settings::FAULT_POINTS)?;
        let mut remaining = HashMap::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, nth) = match entry.split_once('@') {
                Some((name, n)) => (name, n.parse().unwrap_or(1)),
                None => (entry, 1),
            };
            remaining.insert(name.to_owned(), (nth, AtomicU64::new(0)));
        }
        Some(Armed { remaining })
    })
}

/// Logs the armed points at start-up, so that a deployment with faults armed
/// by mistake says so loudly.
pub fn announce() {
    if let Some(armed) = armed() {
        let names: Vec<&str> = armed.remaining.keys().map(String::as_str).collect();
        tracing::warn!(points = ?names, "FAULT_POINTS is set: this process will abort on purpose");
    }
}

/// Aborts the process (like a kill -9: no cleanup, no flush) when `name` is armed
/// and reached for the configured time.
pub fn point(name: &str) {
    let Some(armed) = armed() else { return };
    if let Some((nth, hits)) = armed.remaining.get(name) {
        let hit = hits.fetch_add(1, Ordering::SeqCst) + 1;
        if hit == *nth {
            eprintln!("fault injection: aborting at {name} (hit {hit})");
            std::process::abort();
        }
    }
}
