//! User space's half of the per-process filter the probes apply first (the eBPF crate's
//! `may_track`): a bit per tgid in `SEEDED_TGIDS` for each process whose sockets the agent seeds
//! from /proc at start. The kernel sets its own bits (`TRACKED_TGIDS`) for the sockets it tracks;
//! this map has user space as its only writer, so a read-modify-write of a word loses no bit.

use aya::maps::{Array, Map, MapData};
use llm_observer_common::{TGID_BITMAP_WORDS, tgid_bit};

pub struct TgidBits {
    map: Array<MapData, u64>,
}

impl TgidBits {
    pub fn new(map: Map) -> Option<TgidBits> {
        Array::try_from(map).ok().map(|map| TgidBits { map })
    }

    /// Sets or clears `tgid`'s bit. False when the map refused: the probes would then skip that
    /// process, so the caller must not track sockets of it.
    pub fn set(&mut self, tgid: u32, on: bool) -> bool {
        let (word, bit) = tgid_bit(tgid);
        if word >= TGID_BITMAP_WORDS {
            // No such pid on Linux; the probes treat it as "maybe" and look the socket up.
            return true;
        }
        let Ok(old) = self.map.get(&word, 0) else {
            return false;
        };
        let new = if on { old | bit } else { old & !bit };
        new == old || self.map.set(word, new, 0).is_ok()
    }
}
