use std::time::{Duration, Instant};

use rand::Rng;

/// Exponential backoff with full jitter and a deadline: every retry loop of the cluster
/// client is bounded by one of these.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    deadline: Instant,
    attempts: u32,
}

impl Backoff {
    /// Starts at `base`, doubles up to `max`, gives up at `deadline`.
    pub fn new(base: Duration, max: Duration, deadline: Instant) -> Self {
        Self {
            next: base,
            max,
            deadline,
            attempts: 0,
        }
    }

    /// The usual backoff of a routing retry: 10 ms doubling to 100 ms, until `budget`.
    /// Capped low so a client notices a new leader soon after the election, which is
    /// what bounds failover as SQL sees it.
    pub fn routing(budget: Duration) -> Self {
        Self::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
            Instant::now() + budget,
        )
    }

    /// Retries so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// True once the deadline passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Sleeps before the next attempt; `Err` (with how many attempts were made) once the
    /// deadline would pass.
    pub async fn wait(&mut self) -> Result<(), u32> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(self.attempts);
        }
        let cap = self.next.min(self.deadline - now);
        let sleep = rand::rng().random_range(cap / 2..=cap);
        self.next = (self.next * 2).min(self.max);
        self.attempts += 1;
        tokio::time::sleep(sleep).await;
        Ok(())
    }
}
