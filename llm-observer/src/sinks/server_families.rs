//! Families about the observed servers themselves rather than their requests (`crate::servers`):
//! internal hops kept out of the request families.

use prometheus::IntCounterVec;

use super::registry::Reg;
use crate::servers::hops::Hop;

pub struct ServerInfoFamilies {
    /// `view`, `kind` ([`Hop::as_str`]).
    pub internal: IntCounterVec,
}

impl ServerInfoFamilies {
    pub(crate) fn register(reg: &mut Reg) -> prometheus::Result<Self> {
        let internal = reg.counter_vec(
            "llm_observer_internal_exchanges_total",
            "LLM exchanges that were a server's internal hop (Ollama serve to its runner, llama-server router to a child, a server calling itself), by view and kind; counted in no request family.",
            &["view", "kind"],
        )?;
        // Pre-created: `rate()` sees the first hop.
        for view in ["server", "client"] {
            for hop in Hop::ALL {
                internal.with_label_values(&[view, hop.as_str()]);
            }
        }
        Ok(ServerInfoFamilies { internal })
    }
}
