//! The thread that completes TDX GetQuote requests off the vCPU threads (emulated
//! quoting enclave or forwarding to a quote generation service), under the seccomp
//! filter of `ThreadKind::Quote`.
//!
//! A vCPU thread's GetQuote marks the TD's buffer in flight and hands the rest to this
//! thread as a job ([`QuoteRunner::run`]); the job writes the quote and raises the
//! TD's notification vector. The thread is created by `Vm::run` before the vCPU
//! threads (so it inherits no filter) and installs its own filter before it takes a
//! job. Jobs run one after the other, in the order they were handed over.

use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use launch::tdx::kvm::quote::{QuoteJob, QuoteRunner};
use thiserror::Error;

use crate::seccomp::{Filter, SeccompError};

/// The quote thread could not start.
#[derive(Debug, Error)]
pub enum QuoteThreadError {
    /// The thread could not be created.
    #[error("cannot start the GetQuote thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// Its filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// It ended before it said whether its filter is on.
    #[error("the GetQuote thread ended before it started")]
    Vanished,
    /// It was started already.
    #[error("the GetQuote thread was started already")]
    AlreadyStarted,
}

/// The queue of GetQuote jobs and the thread that runs them (none until [`start`]).
///
/// [`start`]: QuoteThread::start
#[derive(Debug, Default)]
pub struct QuoteThread {
    jobs: Mutex<Option<mpsc::Sender<QuoteJob>>>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl QuoteThread {
    /// A queue with no thread yet: jobs are refused until [`QuoteThread::start`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the thread; it installs `filter` (if any) before it runs a job. Returns
    /// once the filter is on.
    pub fn start(&self, filter: Option<Filter>) -> Result<(), QuoteThreadError> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.is_some() {
            return Err(QuoteThreadError::AlreadyStarted);
        }
        let (tx, rx) = mpsc::channel::<QuoteJob>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("tdx-quote".into())
            .spawn(move || {
                let installed = filter.as_ref().map_or(Ok(()), Filter::apply);
                let ok = installed.is_ok();
                let _ = ready_tx.send(installed);
                if !ok {
                    return;
                }
                for job in rx {
                    job();
                }
            })
            .map_err(QuoteThreadError::Spawn)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = handle.join();
                return Err(e.into());
            }
            Err(_) => return Err(QuoteThreadError::Vanished),
        }
        *jobs = Some(tx);
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// Whether the thread runs (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Refuses further jobs; the thread ends once it has run those queued. With
    /// `wait`, returns when it has (a job that talks to a quote service may take up
    /// to its timeout); without, the thread finishes on its own.
    pub fn stop(&self, wait: bool) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (true, Some(h)) = (wait, handle) {
            if h.join().is_err() {
                log::error!("the GetQuote thread panicked");
            }
        }
    }
}

impl QuoteRunner for QuoteThread {
    fn run(&self, job: QuoteJob) -> Result<(), QuoteJob> {
        match &*self.jobs.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn jobs_are_refused_before_start_and_after_stop() {
        let t = QuoteThread::new();
        assert!(t.run(Box::new(|| {})).is_err(), "not started");
        t.start(None).unwrap();
        assert!(t.is_running());
        t.stop(true);
        assert!(!t.is_running());
        assert!(t.run(Box::new(|| {})).is_err(), "stopped");
    }

    #[test]
    fn jobs_run_in_order_on_the_quote_thread() {
        let t = QuoteThread::new();
        t.start(None).unwrap();
        let (tx, rx) = mpsc::channel();
        let count = Arc::new(AtomicUsize::new(0));
        for i in 0..3 {
            let (tx, count) = (tx.clone(), count.clone());
            let job: QuoteJob = Box::new(move || {
                let seen = count.fetch_add(1, Ordering::SeqCst);
                tx.send((i, seen, std::thread::current().name().map(str::to_owned))).unwrap();
            });
            assert!(t.run(job).is_ok());
        }
        let got: Vec<_> = (0..3).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        assert_eq!(got.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(), [(0, 0), (1, 1), (2, 2)]);
        assert!(got.iter().all(|g| g.2.as_deref() == Some("tdx-quote")));
        t.stop(true);
    }

    #[test]
    fn a_second_start_is_refused() {
        let t = QuoteThread::new();
        t.start(None).unwrap();
        assert!(matches!(t.start(None), Err(QuoteThreadError::AlreadyStarted)));
        t.stop(true);
    }
}
