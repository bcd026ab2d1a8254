use std::fmt;

/// Number of low bits of a timestamp that hold the logical counter.
pub const LOGICAL_BITS: u32 = 18;
/// Largest logical counter value within one physical millisecond.
pub const LOGICAL_MAX: u64 = (1 << LOGICAL_BITS) - 1;

/// A hybrid timestamp handed out by the `Tso`: physical milliseconds since the Unix epoch
/// shifted left by [`LOGICAL_BITS`], plus a logical counter. Totally ordered; `ZERO` is
/// before every timestamp the oracle hands out and `MAX` after.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Before every real timestamp.
    pub const ZERO: Timestamp = Timestamp(0);
    /// After every real timestamp; reading at `MAX` reads the newest committed version.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// Composes a timestamp from its physical milliseconds and logical counter.
    pub fn compose(physical_ms: u64, logical: u64) -> Timestamp {
        debug_assert!(logical <= LOGICAL_MAX, "logical part overflows");
        Timestamp((physical_ms << LOGICAL_BITS) | logical)
    }

    /// Physical milliseconds since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical counter within the physical millisecond.
    pub fn logical(self) -> u64 {
        self.0 & LOGICAL_MAX
    }

    /// The timestamp immediately after this one.
    pub fn next(self) -> Timestamp {
        Timestamp(self.0.saturating_add(1))
    }

    /// The timestamp immediately before this one.
    pub fn prev(self) -> Timestamp {
        Timestamp(self.0.saturating_sub(1))
    }

    /// Big-endian bytes: byte order equals timestamp order.
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ts({}.{})", self.physical_ms(), self.logical())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_round_trips_and_orders() {
        let a = Timestamp::compose(1_000, 5);
        assert_eq!(a.physical_ms(), 1_000);
        assert_eq!(a.logical(), 5);
        assert!(Timestamp::compose(1_000, LOGICAL_MAX) < Timestamp::compose(1_001, 0));
        assert!(a.next() > a && a.prev() < a);
    }
}
