//! llama-server's inventory and metrics answers, from real captures (`curl -i`) kept in
//! llm-observer/tests/data/inventory: the emulator answers `/props`, `/slots` and `/metrics` with
//! their bodies, so a test of the agent's poller predicts exactly what it reads.

/// One captured response; [`Captured::body`] is what follows its head.
pub struct Captured(&'static str);

impl Captured {
    pub fn body(&self) -> String {
        self.0
            .split_once("\r\n\r\n")
            .map_or(self.0, |(_, b)| b)
            .to_owned()
    }
}

pub const PROPS: Captured = Captured(include_str!(
    "../../../llm-observer/tests/data/inventory/llama-server_props.response.http"
));
pub const SLOTS: Captured = Captured(include_str!(
    "../../../llm-observer/tests/data/inventory/llama-server_slots_np2.response.http"
));
pub const METRICS: Captured = Captured(include_str!(
    "../../../llm-observer/tests/data/inventory/llama-server_metrics_enabled.response.http"
));
