//! Shared by the targets: a deterministic split pattern from a seed.

/// xorshift64*: cuts of the input derived from bytes of the input, so a crash reproduces.
pub struct Splits(u64);

impl Splits {
    pub fn new(seed: &[u8]) -> Self {
        let mut s = [0u8; 8];
        for (d, b) in s.iter_mut().zip(seed) {
            *d = *b;
        }
        Splits(u64::from_le_bytes(s) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Length of the next piece of a `left`-byte input (at least 1 when `left > 0`).
    pub fn piece(&mut self, left: usize) -> usize {
        let max = match self.next() % 4 {
            0 => 1,
            1 => 7,
            2 => 64,
            _ => 4096,
        };
        (1 + (self.next() % max) as usize).min(left)
    }

    /// `data` cut into pieces.
    pub fn cut<'a>(&mut self, mut data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = self.piece(data.len());
            let (a, b) = data.split_at(n);
            out.push(a);
            data = b;
        }
        out
    }
}
