//! Model inference on a thread of its own. File mode runs the pipeline on one core; the
//! models' ONNX runs go to a second one, fed by a short queue of batches, so they overlap with
//! the rest of the pipeline instead of adding to it.
//!
//! Requests are served one at a time in the order they were sent, and their responses come
//! back in that order: a detector keeps its own queue of what each batch was about and pairs
//! them up. The queue is bounded, so a model that falls behind slows the pipeline down rather
//! than letting batches pile up in memory.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Requests that may wait for the thread before a submit blocks.
const DEPTH: usize = 4;

/// The inference thread stopped (it panicked): its outstanding work is lost, and the caller
/// counts it as failed.
#[derive(Debug, thiserror::Error)]
#[error("the {0} inference thread stopped")]
pub struct Stopped(pub &'static str);

/// A thread that owns some state (a model, its sessions) and serves requests against it.
pub struct Offload<Req: Send + 'static, Resp: Send + 'static> {
    name: &'static str,
    tx: Option<SyncSender<Req>>,
    rx: Receiver<Resp>,
    in_flight: usize,
    handle: Option<JoinHandle<()>>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Offload<Req, Resp> {
    /// Starts the thread; `serve` answers each request with exactly one response.
    pub fn spawn<S: Send + 'static>(
        name: &'static str,
        mut state: S,
        mut serve: impl FnMut(&mut S, Req) -> Resp + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, requests) = mpsc::sync_channel::<Req>(DEPTH);
        let (responses, rx) = mpsc::channel::<Resp>();
        let handle = std::thread::Builder::new().name(format!("apiwatch-{name}")).spawn(move || {
            for req in requests {
                if responses.send(serve(&mut state, req)).is_err() {
                    break;
                }
            }
        })?;
        Ok(Offload {
            name,
            tx: Some(tx),
            rx,
            in_flight: 0,
            handle: Some(handle),
        })
    }

    /// Sends a request; blocks while the queue is full.
    pub fn submit(&mut self, req: Req) -> Result<(), Stopped> {
        let tx = self.tx.as_ref().ok_or(Stopped(self.name))?;
        tx.send(req).map_err(|_| Stopped(self.name))?;
        self.in_flight += 1;
        Ok(())
    }

    /// The oldest outstanding response, waiting for it; `None` when nothing is outstanding.
    pub fn take(&mut self) -> Result<Option<Resp>, Stopped> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        match self.rx.recv() {
            Ok(r) => {
                self.in_flight -= 1;
                Ok(Some(r))
            }
            Err(_) => {
                self.in_flight = 0;
                Err(Stopped(self.name))
            }
        }
    }

    /// The oldest outstanding response if it is ready, without waiting.
    pub fn try_take(&mut self) -> Option<Resp> {
        if self.in_flight == 0 {
            return None;
        }
        let r = self.rx.try_recv().ok()?;
        self.in_flight -= 1;
        Some(r)
    }

    /// Sends a request and waits for its answer. Responses to earlier requests come first, so
    /// they are returned too, in order, for the caller to handle as it would have.
    pub fn call(&mut self, req: Req) -> Result<(Vec<Resp>, Resp), Stopped> {
        self.submit(req)?;
        let mut earlier = Vec::with_capacity(self.in_flight - 1);
        while self.in_flight > 1 {
            earlier.extend(self.take()?);
        }
        let last = self.take()?.ok_or(Stopped(self.name))?;
        Ok((earlier, last))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Drop for Offload<Req, Resp> {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop.
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_come_back_in_order_and_state_is_kept() {
        let mut o = Offload::spawn("test", 0u64, |sum: &mut u64, x: u64| {
            *sum += x;
            *sum
        })
        .unwrap();
        for x in 1..=10 {
            o.submit(x).unwrap();
            while o.try_take().is_some() {}
        }
        while o.take().unwrap().is_some() {}
        o.submit(1000).unwrap();
        let (earlier, last) = o.call(100).unwrap();
        assert_eq!(earlier, [1055]);
        assert_eq!(last, 1155);
        assert_eq!(o.in_flight(), 0);
        assert!(o.take().unwrap().is_none());
    }

    #[test]
    fn a_stopped_thread_is_reported_not_hung() {
        let mut o = Offload::spawn("test", (), |_: &mut (), x: u32| {
            assert!(x < 3, "deliberate failure");
            x
        })
        .unwrap();
        o.submit(1).unwrap();
        assert_eq!(o.take().unwrap(), Some(1));
        o.submit(5).unwrap();
        assert!(o.take().is_err());
        assert!(o.submit(1).is_err() || o.take().is_err());
    }
}
