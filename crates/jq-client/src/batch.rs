//! Batching without a timer: calls that arrive while a batch is in flight
//! wait for the next one and then go together — one round trip (and, on
//! the server, one commit) for many. A lone call goes out at once, so
//! latency at low load is unchanged, and under load batches grow by
//! themselves. The server group-commits acks, results and submits with it;
//! the worker sends its acks and results with it.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

type Call<I, O> = (I, oneshot::Sender<O>);

pub struct Batcher<I, O> {
    tx: mpsc::Sender<Call<I, O>>,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// `run` gets a batch of at most `max` calls and returns one output per
    /// call, in order.
    pub fn spawn<F, Fut>(lanes: usize, max: usize, run: F) -> Batcher<I, O>
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send,
    {
        let (tx, rx) = mpsc::channel::<Call<I, O>>(max * lanes * 2);
        let rx = Arc::new(Mutex::new(rx));
        let run = Arc::new(run);
        for _ in 0..lanes {
            let (rx, run) = (rx.clone(), run.clone());
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else {
                            return;
                        };
                        let mut b = vec![first];
                        while b.len() < max {
                            match rx.try_recv() {
                                Ok(c) => b.push(c),
                                Err(_) => break,
                            }
                        }
                        b
                    };
                    let (items, replies): (Vec<I>, Vec<oneshot::Sender<O>>) = batch.into_iter().unzip();
                    let outs = run(items).await;
                    for (o, r) in outs.into_iter().zip(replies) {
                        // The caller may have gone (request cancelled).
                        let _ = r.send(o);
                    }
                }
            });
        }
        Batcher { tx }
    }

    /// Queue one call and wait for its output; None if the batcher stopped.
    pub async fn call(&self, item: I) -> Option<O> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((item, tx)).await.ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn calls_arriving_together_share_a_batch_and_get_their_own_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let b = {
            let batches = batches.clone();
            Arc::new(Batcher::spawn(1, 64, move |items: Vec<u32>| {
                batches.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::task::yield_now().await;
                    items.into_iter().map(|i| i * 2).collect()
                }
            }))
        };
        let mut tasks = vec![];
        for i in 0..200u32 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move { (i, b.call(i).await) }));
        }
        for t in tasks {
            let (i, out) = t.await.unwrap();
            assert_eq!(out, Some(i * 2));
        }
        assert!(batches.load(Ordering::SeqCst) < 200, "calls were grouped");
    }
}
