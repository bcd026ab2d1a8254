//! The meta leader's wait-for graph of pessimistic lock waits across the cluster, for
//! deadlock detection (`WaitFor`): each waiting transaction waits for one holder, so the
//! graph is a set of chains, and a new wait closes a cycle iff the holder's chain leads
//! back to the waiter.
//!
//! Bounded twice: at most `edges_max` edges (past it a wait is still checked, not
//! recorded), and an edge older than `ttl` is dropped (its waiter's node may have died
//! without saying the wait ended). Expiry takes the oldest edges first from a queue in
//! recording order, so a wait costs its chain's length, not a pass over every edge.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub(crate) struct WaitGraph {
    /// Waiter's start timestamp → (holder's start timestamp, when recorded).
    edges: HashMap<u64, (u64, Instant)>,
    /// (when recorded, waiter) in recording order. An entry whose edge was since replaced
    /// or removed is skipped when it comes up.
    order: VecDeque<(Instant, u64)>,
    edges_max: usize,
    ttl: Duration,
}

impl WaitGraph {
    pub(crate) fn new(edges_max: usize, ttl: Duration) -> Self {
        Self {
            edges: HashMap::new(),
            order: VecDeque::new(),
            edges_max,
            ttl,
        }
    }

    /// `waiter` waits for `holder` from `now`. Returns true when that closes a cycle (a
    /// deadlock: the wait is not recorded, and the waiter should give up).
    pub(crate) fn wait(&mut self, waiter: u64, holder: u64, now: Instant) -> bool {
        self.expire(now);
        let mut current = holder;
        for _ in 0..=self.edges.len() {
            if current == waiter {
                return true;
            }
            match self.edges.get(&current) {
                Some((next, _)) => current = *next,
                None => break,
            }
        }
        if self.edges.len() < self.edges_max || self.edges.contains_key(&waiter) {
            self.edges.insert(waiter, (holder, now));
            self.order.push_back((now, waiter));
            self.compact();
        }
        false
    }

    /// `waiter` no longer waits.
    pub(crate) fn done(&mut self, waiter: u64) {
        self.edges.remove(&waiter);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(since, waiter)) = self.order.front() {
            if now.saturating_duration_since(since) < self.ttl {
                break;
            }
            self.order.pop_front();
            if self.edges.get(&waiter).is_some_and(|(_, at)| *at == since) {
                self.edges.remove(&waiter);
            }
        }
    }

    /// Drops the queue's skipped entries once they outnumber the edges: waits that end
    /// (`done`) leave their entry behind until it expires.
    fn compact(&mut self) {
        if self.order.len() <= 2 * self.edges.len().max(self.edges_max.min(1024)) {
            return;
        }
        let mut live: Vec<(Instant, u64)> = self
            .edges
            .iter()
            .map(|(waiter, (_, since))| (*since, *waiter))
            .collect();
        live.sort();
        self.order = live.into();
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.edges.len(), self.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn a_wait_that_closes_a_chain_into_a_cycle_is_a_deadlock_and_not_recorded() {
        let now = Instant::now();
        let mut g = WaitGraph::new(100, TTL);
        assert!(!g.wait(1, 2, now));
        assert!(!g.wait(2, 3, now));
        assert!(g.wait(3, 1, now), "3 → 1 → 2 → 3");
        assert_eq!(g.len().0, 2);
        // Once 2 stops waiting the chain is broken.
        g.done(2);
        assert!(!g.wait(3, 1, now));
        assert!(g.wait(1, 1, now), "waiting for itself");
    }

    #[test]
    fn edges_expire_oldest_first_and_a_renewed_edge_keeps_its_new_age() {
        let start = Instant::now();
        let mut g = WaitGraph::new(100, TTL);
        assert!(!g.wait(1, 2, start));
        assert!(!g.wait(2, 3, start + Duration::from_secs(30)));
        // 1 waits again (now for 2 still) at 50 s: its edge is as old as that.
        assert!(!g.wait(1, 2, start + Duration::from_secs(50)));
        // At 70 s the first record of 1 has expired but not its renewal; 2's has not.
        assert!(g.wait(3, 1, start + Duration::from_secs(70)));
        // At 95 s 2's edge (30 s) is gone: no cycle through it.
        assert!(!g.wait(3, 1, start + Duration::from_secs(95)));
        assert!(
            g.wait(2, 3, start + Duration::from_secs(96)),
            "2 → 3 → 1 → 2"
        );
    }

    #[test]
    fn past_the_bound_a_wait_is_checked_but_not_recorded() {
        let now = Instant::now();
        let mut g = WaitGraph::new(2, TTL);
        assert!(!g.wait(1, 2, now));
        assert!(!g.wait(2, 3, now));
        assert!(!g.wait(4, 5, now));
        assert_eq!(g.len().0, 2, "the third edge is not recorded");
        assert!(g.wait(3, 1, now), "still checked against what is recorded");
        // A recorded waiter may still change whom it waits for.
        assert!(!g.wait(2, 6, now));
        assert!(!g.wait(3, 1, now));
    }

    #[test]
    fn ended_waits_do_not_pile_up_in_the_expiry_queue() {
        let now = Instant::now();
        let mut g = WaitGraph::new(10, TTL);
        for waiter in 0..10_000u64 {
            assert!(!g.wait(waiter + 1_000_000, waiter, now));
            g.done(waiter + 1_000_000);
        }
        let (edges, queued) = g.len();
        assert_eq!(edges, 0);
        assert!(queued <= 2 * 10 + 1, "{queued} entries queued for 0 edges");
    }
}
