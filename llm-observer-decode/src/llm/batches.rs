//! The OpenAI Batch API (`/v1/batches`, Azure's `/openai/batches`): creating, reading, listing and
//! cancelling batch jobs. Each call is one exchange of its own operation; none carries a model or
//! tokens (the batch's requests run inside the provider, unseen). The answer is one JSON object
//! (`{"object":"batch",…}` or a list), complete when its top-level value closes.

use super::common::{Core, Engine, Handler, Native};
use super::{ApiDecoder, Request};
use crate::{Api, DecodeError, Limits, Operation};

/// Paths of the collection (query and trailing `/` aside): OpenAI's, and Azure's with and without
/// `v1`. Whole paths, not suffixes: another service's `/api/v1/batches` is not this API.
const COLLECTIONS: [&str; 3] = ["/v1/batches", "/openai/batches", "/openai/v1/batches"];

/// The Batch API operation of a request, by method and path.
pub(crate) fn endpoint(method: &str, path: &str) -> Option<Operation> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    let post = method.eq_ignore_ascii_case("POST");
    let get = method.eq_ignore_ascii_case("GET");
    if COLLECTIONS.contains(&path) {
        return match (post, get) {
            (true, _) => Some(Operation::BatchCreate),
            (_, true) => Some(Operation::BatchList),
            _ => None,
        };
    }
    // `…/batches/{id}` and `…/batches/{id}/cancel`: the id is one non-empty segment.
    let (rest, cancel) = match path.strip_suffix("/cancel") {
        Some(r) => (r, true),
        None => (path, false),
    };
    let (collection, id) = rest.rsplit_once('/')?;
    if id.is_empty() || !COLLECTIONS.contains(&collection) {
        return None;
    }
    match (cancel, post, get) {
        (true, true, _) => Some(Operation::BatchCancel),
        (false, _, true) => Some(Operation::BatchRetrieve),
        _ => None,
    }
}

#[derive(Debug)]
struct Batches;

impl Handler for Batches {
    const NATIVE: Native = Native::Sse;

    fn on_json(&mut self, core: &mut Core, _body: &[u8], _ts_ns: u64, _: &mut Vec<DecodeError>) {
        // The whole object arrived: nothing in it is a count this agent reports.
        core.terminal = true;
    }
}

pub(crate) fn decoder(req: &Request<'_>, op: Operation, limits: &Limits) -> Box<dyn ApiDecoder> {
    let core = Core::new(req, Api::Openai, op, None, false);
    Engine::boxed(core, Batches, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_by_method_and_path() {
        for (method, path, want) in [
            ("POST", "/v1/batches", Some(Operation::BatchCreate)),
            ("GET", "/v1/batches?limit=10", Some(Operation::BatchList)),
            (
                "GET",
                "/v1/batches/batch_abc123",
                Some(Operation::BatchRetrieve),
            ),
            (
                "POST",
                "/v1/batches/batch_abc123/cancel",
                Some(Operation::BatchCancel),
            ),
            (
                "POST",
                "/openai/batches?api-version=2024-10-21",
                Some(Operation::BatchCreate),
            ),
            (
                "GET",
                "/openai/batches/batch_1/",
                Some(Operation::BatchRetrieve),
            ),
            ("DELETE", "/v1/batches/batch_1", None),
            ("GET", "/v1/batches/batch_1/cancel", None),
            ("POST", "/v1/batches/batch_1", None),
            ("GET", "/v1/batches//cancel", None),
            ("GET", "/v1/batchesX", None),
            ("GET", "/v1/files", None),
            ("GET", "/api/v1/batches", None),
            ("POST", "/internal/v1/batches/b1/cancel", None),
            ("POST", "/openai/v1/batches", Some(Operation::BatchCreate)),
        ] {
            assert_eq!(endpoint(method, path), want, "{method} {path}");
        }
    }
}
