//! One memory budget for every byte the decoders buffer, across all connections.
//!
//! Each connection's decoder bounds its own buffers (heads, one request body, one response body,
//! one stream event), but sixteen thousand connections each holding a 4 MiB body would still be
//! 64 GiB. The table charges each connection's buffered bytes here after every change; when the
//! total would pass the budget, the connection that grew is shed — its open exchanges end
//! incomplete (`shed`), its kernel-side capture stops, and the shedding is counted — so the
//! agent's memory stays bounded whatever the node's traffic does.

/// The budget and what it has shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    max: usize,
    total: usize,
    /// Connections shed to stay within the budget.
    pub shed_connections: u64,
    /// Buffered bytes those connections held when they were shed.
    pub shed_bytes: u64,
}

impl Budget {
    pub fn new(max: usize) -> Self {
        Budget {
            max,
            total: 0,
            shed_connections: 0,
            shed_bytes: 0,
        }
    }

    /// Bytes buffered by all connections now.
    pub fn total(&self) -> usize {
        self.total
    }

    /// A connection that was charged `*charged` now buffers `now`: updates both. Returns false
    /// when the total passes the budget — the caller sheds the connection, then calls
    /// [`Budget::shed`].
    pub fn charge(&mut self, charged: &mut usize, now: usize) -> bool {
        self.total = self.total - (*charged).min(self.total) + now;
        *charged = now;
        self.total <= self.max
    }

    /// A connection charged `charged` bytes is gone (ended or shed): releases them.
    pub fn release(&mut self, charged: usize) {
        self.total -= charged.min(self.total);
    }

    /// Counts a connection shed while it held `charged` bytes, and releases them.
    pub fn shed(&mut self, charged: usize) {
        self.shed_connections += 1;
        self.shed_bytes += charged as u64;
        self.release(charged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_releases_and_refuses_past_the_budget() {
        let mut b = Budget::new(100);
        let (mut a, mut c) = (0, 0);
        assert!(b.charge(&mut a, 60));
        assert!(b.charge(&mut c, 40));
        assert_eq!(b.total(), 100);
        // `a` grows past the budget: refused; the caller sheds it.
        assert!(!b.charge(&mut a, 61));
        b.shed(a);
        assert_eq!((b.total(), b.shed_connections, b.shed_bytes), (40, 1, 61));
        // `c` shrinks, then ends.
        assert!(b.charge(&mut c, 10));
        b.release(c);
        assert_eq!(b.total(), 0);
    }
}
