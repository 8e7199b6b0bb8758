//! Small serde helpers shared by the API decoders.
//!
//! The hot path deserializes each stream event into small borrowed structs. Output text is never
//! kept: where a decoder only needs to know whether a field carried output, it deserializes the field
//! as [`NonEmpty`], which looks at the value and drops it without allocating.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Whether a JSON value carries anything: a non-empty string, array or object, or any number or
/// bool. `null` deserializes as `NonEmpty(false)` (inside an `Option` it is `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NonEmpty(pub bool);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NonEmpty;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NonEmpty, E> {
                Ok(NonEmpty(!v.is_empty()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_unit<E: de::Error>(self) -> Result<NonEmpty, E> {
                Ok(NonEmpty(false))
            }
            fn visit_none<E: de::Error>(self) -> Result<NonEmpty, E> {
                Ok(NonEmpty(false))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NonEmpty, D::Error> {
                NonEmpty::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NonEmpty, A::Error> {
                let mut any = false;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(NonEmpty(any))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NonEmpty, A::Error> {
                let mut any = false;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(NonEmpty(any))
            }
        }
        d.deserialize_any(V)
    }
}

/// A request's `prompt` or `input`: whether it carries anything, and how many prompts it holds.
/// OpenAI's shapes: a string is one prompt; an array of strings, or of token arrays, one per
/// element; an array of token ids is one tokenized prompt. Nothing is kept of the text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Prompts {
    pub non_empty: bool,
    /// `None` when the value is `null`, or when the body could not be parsed.
    pub count: Option<u64>,
}

impl Prompts {
    /// What an unparseable body is taken to ask: output, from an unknown number of prompts.
    pub(crate) const UNKNOWN: Prompts = Prompts {
        non_empty: true,
        count: None,
    };
}

impl<'de> Deserialize<'de> for Prompts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// What one array element is, consumed without keeping it.
        #[derive(PartialEq)]
        enum Elem {
            Number,
            Other,
        }
        impl<'de> Deserialize<'de> for Elem {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct E;
                impl<'de> Visitor<'de> for E {
                    type Value = Elem;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("any JSON value")
                    }
                    fn visit_u64<X: de::Error>(self, _: u64) -> Result<Elem, X> {
                        Ok(Elem::Number)
                    }
                    fn visit_i64<X: de::Error>(self, _: i64) -> Result<Elem, X> {
                        Ok(Elem::Number)
                    }
                    fn visit_f64<X: de::Error>(self, _: f64) -> Result<Elem, X> {
                        Ok(Elem::Number)
                    }
                    fn visit_str<X: de::Error>(self, _: &str) -> Result<Elem, X> {
                        Ok(Elem::Other)
                    }
                    fn visit_bool<X: de::Error>(self, _: bool) -> Result<Elem, X> {
                        Ok(Elem::Other)
                    }
                    fn visit_unit<X: de::Error>(self) -> Result<Elem, X> {
                        Ok(Elem::Other)
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Elem, A::Error> {
                        while a.next_element::<IgnoredAny>()?.is_some() {}
                        Ok(Elem::Other)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Elem, A::Error> {
                        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                        Ok(Elem::Other)
                    }
                }
                d.deserialize_any(E)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Prompts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Prompts, E> {
                Ok(Prompts {
                    non_empty: !v.is_empty(),
                    count: Some(1),
                })
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Prompts, E> {
                Ok(Prompts {
                    non_empty: true,
                    count: Some(1),
                })
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Prompts, E> {
                self.visit_bool(true)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Prompts, E> {
                self.visit_bool(true)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Prompts, E> {
                self.visit_bool(true)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Prompts, E> {
                Ok(Prompts::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Prompts, E> {
                Ok(Prompts::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Prompts, D::Error> {
                Prompts::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Prompts, A::Error> {
                let (mut n, mut numbers) = (0u64, 0u64);
                while let Some(e) = seq.next_element::<Elem>()? {
                    n += 1;
                    numbers += u64::from(e == Elem::Number);
                }
                Ok(Prompts {
                    non_empty: n > 0,
                    count: Some(if n > 0 && numbers == n { 1 } else { n }),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Prompts, A::Error> {
                let mut any = false;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(Prompts {
                    non_empty: any,
                    count: Some(1),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Flattens `Option<NonEmpty>` to a bool.
pub(crate) fn has(v: Option<NonEmpty>) -> bool {
    matches!(v, Some(NonEmpty(true)))
}

/// A string that may be borrowed from the input (no escapes) or owned (escapes present).
pub(crate) type Str<'a> = Cow<'a, str>;

/// A JSON-RPC `result` as MCP's decoders read it (HTTP and stdio): only whether it is a tool error.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct RpcResult {
    #[serde(rename = "isError")]
    pub(crate) is_error: Option<bool>,
}

/// A JSON-RPC `error`: only its code.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct RpcError {
    pub(crate) code: Option<i64>,
}

/// A JSON-RPC id (number or string) in a comparable form. Other shapes compare as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum RpcId {
    #[default]
    Missing,
    Num(i128),
    Str(String),
    Null,
    Other,
}

impl<'de> Deserialize<'de> for RpcId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RpcId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC id")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RpcId, E> {
                // Ids are short in practice; a long one is still compared, but bounded.
                Ok(RpcId::Str(v.chars().take(128).collect()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RpcId, E> {
                Ok(RpcId::Num(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RpcId, E> {
                Ok(RpcId::Num(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RpcId, E> {
                // `1.0` and `1` are the same id to most SDKs.
                if v.fract() == 0.0 && v.abs() < 1e30 {
                    Ok(RpcId::Num(v as i128))
                } else {
                    Ok(RpcId::Other)
                }
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RpcId, E> {
                Ok(RpcId::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<RpcId, E> {
                Ok(RpcId::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RpcId, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RpcId::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RpcId, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RpcId::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A count that servers write as an integer, occasionally as a float (`12.0`) or null. Anything
/// else fails the event's parse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Count(pub Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(v).ok()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                Ok(Count(
                    (v >= 0.0 && v.fract() == 0.0 && v < 1.8e19).then_some(v as u64),
                ))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Count, D::Error> {
                Count::deserialize(d)
            }
        }
        d.deserialize_any(V)
    }
}

/// Flattens an optional count.
pub(crate) fn count(v: Option<Count>) -> Option<u64> {
    v.and_then(|c| c.0)
}

/// Strips leading ASCII whitespace.
pub(crate) fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}
