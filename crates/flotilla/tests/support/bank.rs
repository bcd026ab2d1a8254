//! The bank workload the cluster tests run: accounts, and transfers between them in
//! transactions, each recorded in a `transfers` table so an acknowledged one can be found
//! afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Accounts `1..=ACCOUNTS`, each starting with `INITIAL`.
pub const ACCOUNTS: i32 = 20;
pub const INITIAL: i64 = 1000;

/// The tables, and every account at `INITIAL`.
pub async fn create(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT);
             CREATE TABLE transfers (id BIGINT PRIMARY KEY, src INT, dst INT, amount BIGINT)",
        )
        .await
        .unwrap();
    for id in 1..=ACCOUNTS {
        client
            .execute("INSERT INTO accounts VALUES ($1, $2)", &[&id, &INITIAL])
            .await
            .unwrap();
    }
}

/// A worker's transfers: deterministic per worker (xorshift), ids unique across workers.
pub struct Transfers {
    worker: i64,
    n: i64,
    state: u64,
}

impl Transfers {
    pub fn new(worker: i64) -> Self {
        Self {
            worker,
            n: 0,
            state: 0x9e37_79b9_7f4a_7c15u64 ^ (worker as u64),
        }
    }

    fn below(&mut self, m: u64) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % m
    }

    /// The next transfer: (id, from, to, amount), `from != to`.
    pub fn next(&mut self) -> (i64, i32, i32, i64) {
        let from = self.below(ACCOUNTS as u64) as i32 + 1;
        let to = (from + self.below(ACCOUNTS as u64 - 1) as i32) % ACCOUNTS + 1;
        let amount = self.below(10) as i64 + 1;
        let id = self.worker * 1_000_000_000 + self.n;
        self.n += 1;
        (id, from, to, amount)
    }
}

/// One transfer in a transaction (rolled back if any statement fails). The two accounts
/// are locked in id order, so transfers never deadlock one another.
pub async fn transfer(
    client: &tokio_postgres::Client,
    (id, from, to, amount): (i64, i32, i32, i64),
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    let r = async {
        let (first, second, first_delta) = if from < to {
            (from, to, -amount)
        } else {
            (to, from, amount)
        };
        for (account, delta) in [(first, first_delta), (second, -first_delta)] {
            client
                .execute(
                    "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
                    &[&delta, &account],
                )
                .await?;
        }
        client
            .execute(
                "INSERT INTO transfers VALUES ($1, $2, $3, $4)",
                &[&id, &from, &to, &amount],
            )
            .await?;
        client.batch_execute("COMMIT").await
    }
    .await;
    if r.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    r
}

/// Waits until `committed` grows by `n` (bounded by `deadline`, a liveness bound, not a
/// timing target); prints and returns how long it took.
pub fn await_progress(committed: &AtomicU64, n: u64, what: &str, deadline: Duration) -> Duration {
    let start = Instant::now();
    let base = committed.load(Ordering::Relaxed);
    while committed.load(Ordering::Relaxed) < base + n {
        assert!(
            start.elapsed() < deadline,
            "no progress within {deadline:?} after {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let waited = start.elapsed();
    println!("{what}: {n} transfers committed {waited:?} later");
    waited
}

/// Checks the bank after its workload: the total is exact and every acknowledged
/// transfer is there. Returns how many transfers the table holds.
pub async fn check(client: &tokio_postgres::Client, acked: &[i64]) -> usize {
    let total: i64 = client
        .query_one("SELECT sum(balance)::BIGINT FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        total,
        ACCOUNTS as i64 * INITIAL,
        "money was created or lost"
    );
    let ids: std::collections::HashSet<i64> = client
        .query("SELECT id FROM transfers", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !ids.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged transfers lost: {lost:?}");
    ids.len()
}
