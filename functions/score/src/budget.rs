//! A bound on what a JSON body may cost in memory once parsed, checked before it is parsed.
//!
//! Request bodies are parsed into `serde_json::Value` trees, and a tree can be two orders of
//! magnitude bigger than its text: `{"a":1}` is 8 bytes on the wire and a B-tree leaf of
//! about 600 bytes in memory, so a 6 MB body of tiny objects becomes half a gigabyte. Before
//! the tree is built, [`check`] walks the body once with serde's streaming deserializer —
//! building nothing, no allocation per value — estimates what the tree would take, and
//! stops at the first byte past the budget. The budget comes from the server's configured
//! limits (rows per request × the model's width), never from what the body declares.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Estimated bytes of one `Value` slot, with a growing `Vec`'s spare capacity.
const SLOT: usize = 48;
/// Estimated bytes of a `Map` (a B-tree leaf holds 11 entries in about 640 bytes).
const OBJECT: usize = 640;
/// Estimated bytes per object entry beyond the leaf's share (its key's `String` header).
const ENTRY: usize = 58;
/// Estimated allocator overhead of one heap string.
const HEAP: usize = 16;

/// The most a tree can cost per byte of text: `{}` (2 bytes) is a slot and a leaf. A body of
/// `n` bytes never takes more than `n × MAX_BLOWUP` once parsed.
pub const MAX_BLOWUP: usize = (SLOT + OBJECT).div_ceil(2);

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not JSON (serde's message: line, column and what was wrong).
    Malformed(String),
    /// Parsing it would take more than the budget (the estimate when it stopped).
    OverBudget {
        /// The configured budget in bytes.
        budget: usize,
    },
}

/// The budget for a scoring request: `max_rows` rows of `width` inputs in the costliest
/// accepted form (one JSON object per row, keyed by feature name), plus room for the
/// envelope. Overflow-safe: saturates.
pub fn for_rows(max_rows: usize, width: usize) -> usize {
    let per_row = width
        .saturating_mul(SLOT + ENTRY + HEAP + 40)
        .saturating_add(OBJECT + SLOT);
    max_rows.saturating_mul(per_row).saturating_add(1 << 20)
}

/// Walks `body` and refuses it when it is not JSON or when its tree would take more than
/// `budget` bytes. Costs one pass over the bytes and no allocation per value.
pub fn check(body: &[u8], budget: usize) -> Result<(), Refusal> {
    let spent = Cell::new(0usize);
    let over = Cell::new(false);
    let meter = Meter {
        spent: &spent,
        over: &over,
        budget,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let result = meter.deserialize(&mut de).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(()),
        Err(_) if over.get() => Err(Refusal::OverBudget { budget }),
        Err(e) => Err(Refusal::Malformed(e.to_string())),
    }
}

#[derive(Clone, Copy)]
struct Meter<'c> {
    spent: &'c Cell<usize>,
    over: &'c Cell<bool>,
    budget: usize,
}

impl Meter<'_> {
    fn spend<E: de::Error>(self, bytes: usize) -> Result<(), E> {
        let now = self.spent.get().saturating_add(bytes);
        self.spent.set(now);
        if now > self.budget {
            self.over.set(true);
            return Err(E::custom("over the memory budget"));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Meter<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// An object key: its heap string and its entry's share of the map.
#[derive(Clone, Copy)]
struct Key<'c>(Meter<'c>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.spend(ENTRY + HEAP + v.len())
    }
}

impl<'de> Visitor<'de> for Meter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.spend(SLOT)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.spend(SLOT)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.spend(SLOT)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.spend(SLOT)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.spend(SLOT + if v.is_empty() { 0 } else { HEAP + v.len() })
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.spend(SLOT)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.spend(SLOT)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.spend::<A::Error>(SLOT)?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.spend::<A::Error>(SLOT + OBJECT)?;
        while map.next_key_seed(Key(self))?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_objects_are_refused_long_before_the_body_limit() {
        // 700,000 `{"a":1}` (5.6 MB): the body that took the server to 492 MB.
        let mut body = b"{\"dataframe_records\":[".to_vec();
        for i in 0..700_000 {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"a\":1}");
        }
        body.extend_from_slice(b"]}");
        let budget = for_rows(10_000, 30);
        assert_eq!(check(&body, budget), Err(Refusal::OverBudget { budget }));
        // The estimate stops the walk within the budget: about a tenth of the objects.
        assert!(budget < 64 << 20, "budget {budget}");
    }

    #[test]
    fn a_full_request_within_the_row_limit_fits() {
        // 10,000 rows of 30 named features, the costliest legitimate form.
        let names: Vec<String> = (0..30).map(|i| format!("feature number {i}")).collect();
        let mut body = b"{\"dataframe_records\":[".to_vec();
        for r in 0..10_000 {
            if r > 0 {
                body.push(b',');
            }
            let row: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .map(|n| (n.clone(), serde_json::json!(r as f64 * 0.25)))
                .collect();
            body.extend_from_slice(&serde_json::to_vec(&row).unwrap_or_default());
        }
        body.extend_from_slice(b"]}");
        assert_eq!(check(&body, for_rows(10_000, 30)), Ok(()));
        // The same body against a server configured for a tenth of the rows.
        let small = for_rows(1_000, 30);
        assert_eq!(
            check(&body, small),
            Err(Refusal::OverBudget { budget: small })
        );
    }

    #[test]
    fn malformed_json_is_reported_as_such_with_its_position() {
        match check(b"{\"inputs\": [1, 2,", 1 << 20) {
            Err(Refusal::Malformed(m)) => assert!(m.contains("line 1"), "{m}"),
            other => panic!("{other:?}"),
        }
        match check(b"[1] trailing", 1 << 20) {
            Err(Refusal::Malformed(m)) => assert!(m.contains("trailing"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(check(b" {\"a\": [null, true, \"x\\n\"]} ", 1 << 20), Ok(()));
    }

    #[test]
    fn no_body_costs_more_than_max_blowup_per_byte() {
        for body in [
            &b"{}"[..],
            b"[{}]",
            b"[[],[],{}]",
            b"{\"\":{}}",
            b"[1,1,1]",
            b"\"\"",
        ] {
            let n = body.len() * MAX_BLOWUP;
            assert_eq!(check(body, n), Ok(()), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_budget_saturates_instead_of_overflowing() {
        assert_eq!(for_rows(usize::MAX, usize::MAX), usize::MAX);
        assert_eq!(check(b"[[[[1]]]]", usize::MAX), Ok(()));
    }
}
