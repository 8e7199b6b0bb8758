//! A byte buffer that remembers, for every byte, the capture time of the chunk that delivered it
//! (Pixie's `DataStreamBuffer::GetTimestamp(pos)`), so a message assembled from several TCP
//! segments can be stamped with the time of its first byte and of the byte that completed it.

/// Bytes plus `(end offset, ts)` runs: run `i` covers `[runs[i-1].0, runs[i].0)`. Consecutive
/// chunks with the same timestamp share a run, so a run never covers zero bytes and there are never
/// more runs than bytes.
#[derive(Debug, Clone, Default)]
pub struct TsBuf {
    bytes: Vec<u8>,
    runs: Vec<(usize, u64)>,
}

impl TsBuf {
    pub fn new() -> Self {
        TsBuf::default()
    }

    /// Appends `data` captured at `ts_ns`.
    pub fn push(&mut self, data: &[u8], ts_ns: u64) {
        if data.is_empty() {
            return;
        }
        self.bytes.extend_from_slice(data);
        match self.runs.last_mut() {
            Some((end, ts)) if *ts == ts_ns => *end = self.bytes.len(),
            _ => self.runs.push((self.bytes.len(), ts_ns)),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Capture time of the byte at `offset` (`None` past the end).
    pub fn ts_at(&self, offset: usize) -> Option<u64> {
        let i = self.runs.partition_point(|&(end, _)| end <= offset);
        self.runs.get(i).map(|&(_, ts)| ts)
    }

    /// Capture time of the first byte.
    pub fn first_ts(&self) -> Option<u64> {
        self.runs.first().map(|&(_, ts)| ts)
    }

    /// Capture time of the last byte.
    pub fn last_ts(&self) -> Option<u64> {
        self.runs.last().map(|&(_, ts)| ts)
    }

    /// Empties the buffer, releasing its memory when it had grown large, so one big message does
    /// not pin memory for the rest of a long-lived connection.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.runs.clear();
        if self.bytes.capacity() > 16 * 1024 {
            self.bytes = Vec::new();
            self.runs = Vec::new();
        }
    }

    /// Takes the bytes out, leaving the buffer empty.
    pub fn take_bytes(&mut self) -> Vec<u8> {
        self.runs.clear();
        std::mem::take(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_byte_to_its_chunk_time() {
        let mut b = TsBuf::new();
        b.push(b"GET ", 10);
        b.push(b"", 11);
        b.push(b"/ HTTP", 12);
        b.push(b"/1.1", 12);
        b.push(b"\r\n", 13);
        assert_eq!(b.as_slice(), b"GET / HTTP/1.1\r\n");
        let stamps: Vec<_> = (0..b.len() + 1).map(|i| b.ts_at(i)).collect();
        let mut want = vec![Some(10); 4];
        want.extend([Some(12); 10]);
        want.extend([Some(13); 2]);
        want.push(None);
        assert_eq!(stamps, want);
        assert_eq!((b.first_ts(), b.last_ts()), (Some(10), Some(13)));
        b.clear();
        assert_eq!((b.len(), b.first_ts(), b.ts_at(0)), (0, None, None));
    }
}
