//! MLflow record bodies parsed straight into a [`Frame`], with no JSON tree in between.
//!
//! `{"dataframe_records": [{"f": 1.0, …}, …]}` (and `instances` / `inputs` holding records)
//! is the costliest accepted form: as a `serde_json::Value` tree a 30-field record takes
//! about 2.5 KB, so the largest body that fits Lambda's 6 MB payload took the server to
//! 69 MB. Here serde's streaming deserializer visits the body once and every value goes
//! into its row and input slot as it is read: what is built is the frame itself (a slot per
//! row and input) and nothing in proportion to the body's text. Numbers and strings borrow
//! from the body; a string with escapes is unescaped into a side list and patched in by
//! [`Pending::resolve`]. The row limit applies while reading: past it the remaining records
//! are only counted.
//!
//! Any body of another shape (a split frame, rows as arrays, a single column, columns,
//! several keys, malformed JSON) is left to the tree parser in [`crate::parse`] —
//! [`records`] answers `None` for it — so every other form keeps its exact messages.

use std::borrow::Cow;
use std::fmt;

use lambdaml::features::RawValue;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::ApiError;
use crate::loader::LoadedModel;
use crate::parse::{Builder, Col, Frame, Limits, MLFLOW_KEYS, check_rows};

/// A frame read from the body, waiting for its unescaped strings.
#[derive(Debug)]
pub struct Pending<'a> {
    frame: Frame<'a>,
    /// (slot, index into the unescaped strings) for every string that had escapes.
    patches: Vec<(usize, usize)>,
}

impl<'a> Pending<'a> {
    /// The frame, with its escaped strings taken from `owned` (the list [`records`] filled).
    pub fn resolve<'b>(self, owned: &'b [String]) -> Frame<'b>
    where
        'a: 'b,
    {
        let mut frame: Frame<'b> = self.frame;
        for (slot, k) in self.patches {
            if let (Some(v), Some(s)) = (frame.values.get_mut(slot), owned.get(k)) {
                *v = RawValue::Text(s);
            }
        }
        frame
    }
}

/// Parses an MLflow records body, or answers `None` when the body has another shape (the
/// caller then parses it as a tree). Strings with escapes are unescaped into `owned`.
pub fn records<'a>(
    model: &LoadedModel,
    body: &'a [u8],
    limits: Limits,
    owned: &mut Vec<String>,
) -> Option<Result<Pending<'a>, ApiError>> {
    let mut state = State {
        builder: Builder::growing(model),
        limits,
        owned,
        patches: Vec::new(),
        found: None,
        over: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = (&mut de).deserialize_map(Top(&mut state));
    // Any error — another shape (`not_records`), malformed JSON — leaves it to the tree.
    if parsed.is_err() || de.end().is_err() {
        return None;
    }
    state.found?;
    if let Some(rows) = state.over {
        return Some(Err(check_rows(rows, limits)
            .err()
            .unwrap_or_else(|| ApiError::too_large("too many rows"))));
    }
    if state.builder.rows == 0 {
        // "the request has no rows", worded by the tree parser.
        return None;
    }
    let patches = state.patches;
    Some(
        state
            .builder
            .finish(true)
            .map(|frame| Pending { frame, patches }),
    )
}

struct State<'m, 'a, 'o> {
    builder: Builder<'m, 'a>,
    limits: Limits,
    owned: &'o mut Vec<String>,
    patches: Vec<(usize, usize)>,
    /// The records key seen.
    found: Option<&'static str>,
    /// Set when there were more rows than the limit (the total counted).
    over: Option<usize>,
}

/// Stops the pass: the body has another shape, and the tree parser decides.
fn not_records<E: de::Error>() -> E {
    E::custom("not a records body")
}

/// The top-level object: one records key, optionally `params`.
struct Top<'s, 'm, 'a, 'o>(&'s mut State<'m, 'a, 'o>);

impl<'de, 'm, 'o> Visitor<'de> for Top<'_, 'm, 'de, 'o> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an MLflow records body")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.0;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let key: &str = &key.0;
            if key == "params" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let Some(&known) = MLFLOW_KEYS.iter().find(|k| **k == key) else {
                return Err(not_records());
            };
            if known == "dataframe_split" || state.found.is_some() {
                return Err(not_records());
            }
            state.found = Some(known);
            map.next_value_seed(Rows {
                state: &mut *state,
                key: known,
            })?;
        }
        Ok(())
    }
}

/// An object key, borrowed from the body unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The records array.
struct Rows<'s, 'm, 'a, 'o> {
    state: &'s mut State<'m, 'a, 'o>,
    key: &'static str,
}

impl<'de, 'm, 'o> DeserializeSeed<'de> for Rows<'_, 'm, 'de, 'o> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'm, 'o> Visitor<'de> for Rows<'_, 'm, 'de, 'o> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.state;
        loop {
            if state.builder.rows == state.limits.max_rows {
                // Past the limit: count what is left without keeping it.
                let mut rows = state.builder.rows;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    rows += 1;
                }
                if rows > state.limits.max_rows {
                    state.over = Some(rows);
                }
                return Ok(());
            }
            let first = state.builder.rows == 0;
            let Some(()) = seq.next_element_seed(Record {
                state: &mut *state,
                key: self.key,
                first,
            })?
            else {
                return Ok(());
            };
        }
    }
    // Anything but an array (columns, a scalar) is refused by serde's default visitor
    // methods: the tree parser's forms.
}

/// One element of the records array.
struct Record<'s, 'm, 'a, 'o> {
    state: &'s mut State<'m, 'a, 'o>,
    key: &'static str,
    /// The first element decides the form of `instances` / `inputs`.
    first: bool,
}

impl<'de, 'm, 'o> DeserializeSeed<'de> for Record<'_, 'm, 'de, 'o> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'm, 'o> Record<'_, 'm, 'de, 'o> {
    /// An element that is not an object: rows or a single column when it is the first of
    /// `instances` / `inputs` (the tree parser's forms), otherwise a row error.
    fn not_a_record<E: de::Error>(self, what: &str) -> Result<(), E> {
        if self.first && self.key != "dataframe_records" {
            return Err(not_records());
        }
        let row = self.state.builder.add_row();
        self.state.builder.errors.push(
            Some(row),
            Some(self.key),
            format!("expected a record (object), got {what}"),
        );
        Ok(())
    }
}

impl<'de, 'm, 'o> Visitor<'de> for Record<'_, 'm, 'de, 'o> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.state;
        let row = state.builder.add_row();
        let width = state.builder.model.width();
        while let Some(name) = map.next_key::<Key<'de>>()? {
            let name: &str = &name.0;
            match state.builder.column(name, Some(row)) {
                Col::Input(i) => match map.next_value::<Scalar<'de>>()? {
                    Scalar::Value(raw) => state.builder.put(row, i, raw),
                    Scalar::Escaped(text) => {
                        state.patches.push((row * width + i, state.owned.len()));
                        state.owned.push(text);
                        state.builder.put(row, i, RawValue::Missing);
                    }
                    Scalar::Not(what) => state.builder.errors.push(
                        Some(row),
                        Some(name),
                        format!("expected a single value, got {what}"),
                    ),
                },
                Col::Skip => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.first && self.key != "dataframe_records" {
            return Err(not_records());
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.not_a_record("an array")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_a_record("null")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_a_record("a boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_a_record("a number")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_a_record("a number")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_a_record("a number")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_a_record("a string")
    }
}

/// A field's value.
enum Scalar<'de> {
    Value(RawValue<'de>),
    /// A string that had escapes, unescaped.
    Escaped(String),
    /// An array or object (named).
    Not(&'static str),
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Value(RawValue::Missing))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Value(RawValue::Number(if b { 1.0 } else { 0.0 })))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Value(RawValue::Number(n as f64)))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Value(RawValue::Number(n as f64)))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Value(RawValue::Number(n)))
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Value(RawValue::Text(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Escaped(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Not("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Not("an object"))
            }
        }
        d.deserialize_any(V)
    }
}
