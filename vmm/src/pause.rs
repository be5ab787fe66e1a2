//! The gate that parks vCPU threads outside KVM_RUN while their VM is paused.
//!
//! The controller closes the gate ([`PauseGate::close`]) and kicks every vCPU thread
//! (`crate::vcpu::kick_signal`); each thread, back in its run loop, parks at the gate
//! ([`PauseGate::park_while_closed`]) until the controller opens it again. The
//! controller knows the pause is complete when [`PauseGate::parked`] threads (plus
//! those that have ended) account for every vCPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Parks vCPU threads while closed.
#[derive(Debug, Default)]
pub struct PauseGate {
    /// Fast path for the run loop: read before every KVM_RUN, without the lock.
    closed: AtomicBool,
    inner: Mutex<Inner>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Inner {
    closed: bool,
    parked: usize,
}

impl PauseGate {
    /// An open gate.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the gate: vCPU threads that reach it from now on park.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        self.closed.store(true, Ordering::Release);
    }

    /// Opens the gate and wakes every parked thread.
    pub fn open(&self) {
        let mut inner = self.lock();
        inner.closed = false;
        self.closed.store(false, Ordering::Release);
        self.changed.notify_all();
    }

    /// Whether the gate is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// How many threads are parked.
    pub fn parked(&self) -> usize {
        self.lock().parked
    }

    /// Called by a vCPU thread between two KVM_RUNs: returns at once if the gate is
    /// open, otherwise parks until it opens.
    pub fn park_while_closed(&self) {
        if !self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.lock();
        if !inner.closed {
            return;
        }
        inner.parked += 1;
        self.changed.notify_all();
        while inner.closed {
            inner = self.changed.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
        inner.parked -= 1;
    }

    /// Waits up to `timeout` for the number of parked threads to reach `count`;
    /// returns the number parked.
    pub fn wait_parked(&self, count: usize, timeout: Duration) -> usize {
        let inner = self.lock();
        let (inner, _) =
            self.changed.wait_timeout_while(inner, timeout, |i| i.parked < count).unwrap_or_else(|e| e.into_inner());
        inner.parked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn an_open_gate_never_blocks() {
        let gate = PauseGate::new();
        gate.park_while_closed();
        assert_eq!(gate.parked(), 0);
    }

    #[test]
    fn closed_gate_parks_threads_until_it_opens() {
        let gate = Arc::new(PauseGate::new());
        gate.close();
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let g = gate.clone();
                std::thread::spawn(move || {
                    g.park_while_closed();
                    Instant::now()
                })
            })
            .collect();
        assert_eq!(gate.wait_parked(3, Duration::from_secs(10)), 3);
        std::thread::sleep(Duration::from_millis(50));
        assert!(threads.iter().all(|t| !t.is_finished()), "parked threads stay parked");
        let opened = Instant::now();
        gate.open();
        for t in threads {
            assert!(t.join().unwrap() >= opened);
        }
        assert_eq!(gate.parked(), 0);
    }

    #[test]
    fn waiting_for_more_parked_threads_than_exist_times_out() {
        let gate = PauseGate::new();
        gate.close();
        let start = Instant::now();
        assert_eq!(gate.wait_parked(1, Duration::from_millis(30)), 0);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
