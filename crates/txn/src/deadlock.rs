//! Deadlock detection over the wait-for graph of transactions.

use std::collections::HashMap;

use flotilla_types::Timestamp;
use parking_lot::Mutex;

/// Who waits for whom. A waiting transaction waits for exactly one holder at a time, so
/// the graph is a set of chains; a cycle exists iff following the chain from the holder
/// leads back to the waiter.
#[derive(Default)]
pub(crate) struct WaitForGraph {
    edges: Mutex<HashMap<Timestamp, Timestamp>>,
}

/// Removes the waiter's edge when its wait ends.
pub(crate) struct WaitGuard<'a> {
    graph: &'a WaitForGraph,
    waiter: Timestamp,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.graph.edges.lock().remove(&self.waiter);
    }
}

impl WaitForGraph {
    /// Records that `waiter` waits for `holder`, or refuses with the cycle's existence.
    pub(crate) fn wait(&self, waiter: Timestamp, holder: Timestamp) -> Result<WaitGuard<'_>, ()> {
        let mut edges = self.edges.lock();
        let mut current = holder;
        // The chain is at most as long as the number of waiters; the bound guards against
        // a bug turning into an endless loop under the mutex.
        for _ in 0..=edges.len() {
            if current == waiter {
                return Err(());
            }
            match edges.get(&current) {
                Some(next) => current = *next,
                None => break,
            }
        }
        edges.insert(waiter, holder);
        Ok(WaitGuard {
            graph: self,
            waiter,
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.edges.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_cycles_and_forgets_finished_waits() {
        let g = WaitForGraph::default();
        let (a, b, c) = (Timestamp(1), Timestamp(2), Timestamp(3));
        let ab = g.wait(a, b).unwrap();
        let bc = g.wait(b, c).unwrap();
        assert!(g.wait(c, a).is_err(), "a -> b -> c -> a is a cycle");
        drop(ab);
        let ca = g.wait(c, a).unwrap();
        assert_eq!(g.len(), 2);
        drop(bc);
        drop(ca);
        assert_eq!(g.len(), 0);
    }
}
