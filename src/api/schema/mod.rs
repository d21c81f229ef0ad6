//! Request-body parsing and validation for the code-suggestion endpoints, answering with the
//! very 422 error objects FastAPI and pydantic v2 produce.
//!
//! # Why hand-written
//!
//! The original gateway declares its bodies as pydantic v2 models and lets FastAPI validate them.
//! A bad body is answered `422 {"detail": [{"type", "loc", "msg", "input", "ctx"?}, ...]}` with one
//! object for *every* failing field, in field-declaration order, in pydantic's exact wording
//! (spec 1.3, 16). GitLab Rails logs `detail` and IDE extensions sometimes branch on `type` and
//! `loc`, so these objects are part of the wire contract. serde's derive stops at the first error
//! and words it its own way, so bodies are walked by hand instead: one pass over an already parsed
//! [`serde_json::Value`], no re-serialisation, and nothing allocated for locations or messages
//! unless an error is actually reported (this is the hot path of every completion request).
//!
//! # Which pydantic rules
//!
//! FastAPI hands pydantic the *Python objects* that `json.loads` made, with `from_attributes=True`,
//! so pydantic's lax **Python-mode** rules apply, not its JSON mode: `"12"`, `12.0` and `true` are
//! integers, `"yes"`, `"off"`, `0` and `1` are booleans, numbers are never strings, a non-object
//! where a model is expected is `model_attributes_type`, enum members render with their Python
//! `repr` where pydantic renders them that way. The ground truth is pydantic 2.10 / pydantic-core
//! 2.27 under FastAPI 0.115.6, the versions the original locks.
//!
//! # Known differences from the original
//!
//! - Integers outside `i64` (Python's are unbounded) are refused with `int_parsing_size`.
//! - `NaN`, `Infinity` and numbers that overflow a double, which Python's `json` accepts, are
//!   refused as unparsable (400); the original usually answers those bodies with a 500.
//! - Lone surrogate escapes (`"\ud800"`) become U+FFFD; the original keeps them and usually
//!   fails with a 500 when it has to encode them again.
//! - Valid bodies are parsed by `serde_json`, whose default float parsing may differ from
//!   Python's in the last digit of doubles with more than 17 significant digits (the
//!   `float_roundtrip` feature of `serde_json` would remove this).
//!
//! # Layout
//!
//! - this file: the toolkit. [`ValidationError`] (one error object, rendered with
//!   [`ValidationError::to_value`]), [`Loc`]/[`LocItem`] (error locations), and [`Errors`], an
//!   accumulator whose typed readers (`string`, `int`, `boolean`, `list`, `one_of`, `model`,
//!   `required`, `optional`, ...) collect every error of a body the way pydantic does.
//! - [`body`]: raw request bytes to a `Value` the way Starlette's `request.json()` and FastAPI do it,
//!   including FastAPI's `json_invalid` errors with Python's own `json` messages and positions.
//! - [`code`]: `/v2/code/completions` and `/v2/code/generations` (spec 3.1, 3.2).
//! - [`components`]: `/v3/code/completions` and `/v4/code/suggestions` (spec 3.3, 3.4).

use std::fmt::Write as _;

use serde_json::{Map, Value};

pub mod agent;
pub mod body;
pub mod chat;
pub mod code;
pub mod components;
pub mod search;
pub mod x_ray;

#[cfg(test)]
mod proptests;

pub use body::{
    is_json_content_type, parse_body, read_body, read_body_with_content_type, BodyError,
};

// ---------------------------------------------------------------------------------------------
// Locations
// ---------------------------------------------------------------------------------------------

/// One owned step of an error location: a field name, a list index, or a discriminated-union tag
/// (pydantic puts the tag *value* into `loc`: `["body", 2, "model_name"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocItem {
    /// A field name or a string tag, rendered as a JSON string.
    Key(String),
    /// A list index or an integer tag, rendered as a JSON number.
    Index(i64),
}

impl LocItem {
    /// The JSON form of this step.
    pub fn to_value(&self) -> Value {
        match self {
            LocItem::Key(k) => Value::String(k.clone()),
            LocItem::Index(i) => Value::from(*i),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(i64),
}

/// A borrowed error location, built on the stack while a body is walked: each step points at its
/// parent, so descending into a field costs nothing and the owned path ([`Loc::to_items`]) is only
/// made when an error is reported.
#[derive(Debug, Clone, Copy)]
pub struct Loc<'a> {
    parent: Option<&'a Loc<'a>>,
    step: Step<'a>,
}

impl<'a> Loc<'a> {
    /// A location of one step, e.g. `Loc::root("body")`.
    pub const fn root(key: &'a str) -> Self {
        Loc {
            parent: None,
            step: Step::Key(key),
        }
    }

    /// This location followed by a field name (or string tag).
    pub fn key<'b>(&'b self, key: &'b str) -> Loc<'b> {
        Loc {
            parent: Some(self),
            step: Step::Key(key),
        }
    }

    /// This location followed by a list index (or integer tag).
    pub fn index<'b>(&'b self, index: i64) -> Loc<'b> {
        Loc {
            parent: Some(self),
            step: Step::Index(index),
        }
    }

    /// This location followed by a list position.
    pub fn position<'b>(&'b self, position: usize) -> Loc<'b> {
        self.index(i64::try_from(position).unwrap_or(i64::MAX))
    }

    /// The owned path, outermost step first.
    pub fn to_items(&self) -> Vec<LocItem> {
        let mut items = Vec::with_capacity(8);
        let mut cur = Some(self);
        while let Some(loc) = cur {
            items.push(match loc.step {
                Step::Key(k) => LocItem::Key(k.to_owned()),
                Step::Index(i) => LocItem::Index(i),
            });
            cur = loc.parent;
        }
        items.reverse();
        items
    }
}

// ---------------------------------------------------------------------------------------------
// Error objects
// ---------------------------------------------------------------------------------------------

/// One pydantic error object as FastAPI renders it: `type`, `loc`, `msg`, `input` and, for the
/// error types that carry one, `ctx` (never `url`: FastAPI asks for `include_url=False`).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationError {
    /// pydantic's error type, e.g. `missing`, `string_too_long`.
    pub kind: &'static str,
    /// Where, starting with `"body"`.
    pub loc: Vec<LocItem>,
    /// pydantic's message.
    pub msg: String,
    /// The offending input (for `missing`, the object that lacks the field).
    pub input: Value,
    /// The error context, for the types whose message is built from one.
    pub ctx: Option<Map<String, Value>>,
}

/// A number as Python prints it in pydantic's messages: floats with a fractional part of zero
/// keep their `.0`.
fn py_number(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 {
                format!("{f:.1}")
            } else {
                f.to_string()
            }
        }
        other => other.to_string(),
    }
}

fn ctx1(key: &str, value: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(key.to_owned(), value);
    m
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl ValidationError {
    /// An error without context.
    pub fn new(kind: &'static str, loc: &Loc<'_>, msg: impl Into<String>, input: &Value) -> Self {
        ValidationError {
            kind,
            loc: loc.to_items(),
            msg: msg.into(),
            input: input.clone(),
            ctx: None,
        }
    }

    /// The same error with a context object.
    pub fn with_ctx(mut self, ctx: Map<String, Value>) -> Self {
        self.ctx = Some(ctx);
        self
    }

    /// The error object as FastAPI sends it, keys in FastAPI's order.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".to_owned(), Value::String(self.kind.to_owned()));
        m.insert(
            "loc".to_owned(),
            Value::Array(self.loc.iter().map(LocItem::to_value).collect()),
        );
        m.insert("msg".to_owned(), Value::String(self.msg.clone()));
        m.insert("input".to_owned(), self.input.clone());
        if let Some(ctx) = &self.ctx {
            m.insert("ctx".to_owned(), Value::Object(ctx.clone()));
        }
        Value::Object(m)
    }

    /// `missing`: a required field is absent; `input` is the object that lacks it.
    pub fn missing(loc: &Loc<'_>, object: &Value) -> Self {
        Self::new("missing", loc, "Field required", object)
    }

    /// `string_type`.
    pub fn string_type(loc: &Loc<'_>, input: &Value) -> Self {
        Self::new("string_type", loc, "Input should be a valid string", input)
    }

    /// `string_too_long` (lengths are counted in characters).
    pub fn string_too_long(loc: &Loc<'_>, input: &Value, max_length: usize) -> Self {
        Self::new(
            "string_too_long",
            loc,
            format!(
                "String should have at most {max_length} character{}",
                plural(max_length)
            ),
            input,
        )
        .with_ctx(ctx1("max_length", Value::from(max_length)))
    }

    /// `int_type`.
    pub fn int_type(loc: &Loc<'_>, input: &Value) -> Self {
        Self::new("int_type", loc, "Input should be a valid integer", input)
    }

    /// `int_parsing`: a string that is not an integer.
    pub fn int_parsing(loc: &Loc<'_>, input: &Value) -> Self {
        Self::new(
            "int_parsing",
            loc,
            "Input should be a valid integer, unable to parse string as an integer",
            input,
        )
    }

    /// `int_from_float`: a number with a fractional part.
    pub fn int_from_float(loc: &Loc<'_>, input: &Value) -> Self {
        Self::new(
            "int_from_float",
            loc,
            "Input should be a valid integer, got a number with a fractional part",
            input,
        )
    }

    /// `int_parsing_size`: an integer too large to hold.
    pub fn int_parsing_size(loc: &Loc<'_>, input: &Value) -> Self {
        Self::new(
            "int_parsing_size",
            loc,
            "Unable to parse input string as an integer, exceeded maximum size",
            input,
        )
    }

    /// `bool_type`.
    pub fn bool_type(loc: &Loc<'_>, input: &Value) -> Self {
        Self::new("bool_type", loc, "Input should be a valid boolean", input)
    }

    /// `bool_parsing`: a string or number that is not one of the accepted spellings.
    pub fn bool_parsing(loc: &Loc<'_>, input: &Value) -> Self {
        Self::new(
            "bool_parsing",
            loc,
            "Input should be a valid boolean, unable to interpret input",
            input,
        )
    }

    /// `list_type`.
    pub fn list_type(loc: &Loc<'_>, input: &Value) -> Self {
        Self::new("list_type", loc, "Input should be a valid list", input)
    }

    /// `too_long` for a list.
    pub fn list_too_long(loc: &Loc<'_>, input: &Value, max_length: usize, actual: usize) -> Self {
        let mut ctx = ctx1("field_type", Value::from("List"));
        ctx.insert("max_length".to_owned(), Value::from(max_length));
        ctx.insert("actual_length".to_owned(), Value::from(actual));
        Self::new(
            "too_long",
            loc,
            format!(
                "List should have at most {max_length} item{} after validation, not {actual}",
                plural(max_length)
            ),
            input,
        )
        .with_ctx(ctx)
    }

    /// `too_short` for a list.
    pub fn list_too_short(loc: &Loc<'_>, input: &Value, min_length: usize, actual: usize) -> Self {
        let mut ctx = ctx1("field_type", Value::from("List"));
        ctx.insert("min_length".to_owned(), Value::from(min_length));
        ctx.insert("actual_length".to_owned(), Value::from(actual));
        Self::new(
            "too_short",
            loc,
            format!(
                "List should have at least {min_length} item{} after validation, not {actual}",
                plural(min_length)
            ),
            input,
        )
        .with_ctx(ctx)
    }

    /// `model_attributes_type`: a model was expected (FastAPI validates with
    /// `from_attributes=True`, hence this type rather than `model_type` or `dict_type`).
    pub fn model_attributes_type(loc: &Loc<'_>, input: &Value) -> Self {
        Self::new(
            "model_attributes_type",
            loc,
            "Input should be a valid dictionary or object to extract fields from",
            input,
        )
    }

    /// `dict_type`: a plain `dict[...]` was expected.
    pub fn dict_type(loc: &Loc<'_>, input: &Value) -> Self {
        Self::new(
            "dict_type",
            loc,
            "Input should be a valid dictionary",
            input,
        )
    }

    /// `literal_error` (`Literal[...]` fields) or `enum` (enum-typed fields): both read
    /// `Input should be <expected>` with `ctx.expected`.
    pub fn choice(kind: ChoiceKind, loc: &Loc<'_>, input: &Value, expected: &str) -> Self {
        let kind = match kind {
            ChoiceKind::Literal => "literal_error",
            ChoiceKind::Enum => "enum",
        };
        Self::new(kind, loc, format!("Input should be {expected}"), input)
            .with_ctx(ctx1("expected", Value::from(expected)))
    }

    /// `union_tag_invalid`: the discriminator names no variant. `tag` is Python's `str()` of the
    /// tag (see [`py_str`]); `discriminator` is quoted the pydantic way, e.g. `'type'`.
    pub fn union_tag_invalid(
        loc: &Loc<'_>,
        input: &Value,
        discriminator: &str,
        tag: &str,
        expected_tags: &str,
    ) -> Self {
        let mut ctx = ctx1("discriminator", Value::from(discriminator));
        ctx.insert("tag".to_owned(), Value::from(tag));
        ctx.insert("expected_tags".to_owned(), Value::from(expected_tags));
        Self::new(
            "union_tag_invalid",
            loc,
            format!(
                "Input tag '{tag}' found using {discriminator} does not match any of the expected tags: {expected_tags}"
            ),
            input,
        )
        .with_ctx(ctx)
    }

    /// `union_tag_not_found`: the discriminator field is absent.
    pub fn union_tag_not_found(loc: &Loc<'_>, input: &Value, discriminator: &str) -> Self {
        Self::new(
            "union_tag_not_found",
            loc,
            format!("Unable to extract tag using discriminator {discriminator}"),
            input,
        )
        .with_ctx(ctx1("discriminator", Value::from(discriminator)))
    }

    /// `value_error` raised by a validator function. FastAPI's `jsonable_encoder` turns the
    /// exception object in `ctx.error` into `{}`.
    pub fn value_error(loc: &Loc<'_>, input: &Value, message: &str) -> Self {
        Self::new("value_error", loc, format!("Value error, {message}"), input)
            .with_ctx(ctx1("error", Value::Object(Map::new())))
    }
}

/// The body of FastAPI's 422 answer: `{"detail": errors}`.
pub fn detail(errors: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert("detail".to_owned(), Value::Array(errors));
    Value::Object(m)
}

impl From<ValidationError> for Value {
    fn from(e: ValidationError) -> Value {
        e.to_value()
    }
}

// ---------------------------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------------------------

/// Constraints of a string field (`Annotated[str, StringConstraints(...)]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Str {
    /// `max_length`, in characters (Unicode scalar values, as Python's `len`).
    pub max_length: Option<usize>,
    /// `strip_whitespace=True`: Unicode whitespace is trimmed before the length check and the
    /// trimmed value is kept.
    pub strip: bool,
}

impl Str {
    /// Any string.
    pub const ANY: Str = Str {
        max_length: None,
        strip: false,
    };

    /// At most `n` characters.
    pub const fn max(n: usize) -> Str {
        Str {
            max_length: Some(n),
            strip: false,
        }
    }

    /// Stripped, then at most `n` characters.
    pub const fn strip_max(n: usize) -> Str {
        Str {
            max_length: Some(n),
            strip: true,
        }
    }
}

/// Length bounds of a list field (`Field(min_length=..., max_length=...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Len {
    /// Fewest items.
    pub min: Option<usize>,
    /// Most items.
    pub max: Option<usize>,
}

impl Len {
    /// No bounds.
    pub const ANY: Len = Len {
        min: None,
        max: None,
    };

    /// At most `n` items.
    pub const fn max(n: usize) -> Len {
        Len {
            min: None,
            max: Some(n),
        }
    }

    /// Between `min` and `max` items.
    pub const fn between(min: usize, max: usize) -> Len {
        Len {
            min: Some(min),
            max: Some(max),
        }
    }
}

/// Whether a closed set of strings is a `Literal[...]` (error type `literal_error`) or an enum
/// type (error type `enum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceKind {
    /// `Literal[...]`.
    Literal,
    /// An `Enum` subclass.
    Enum,
}

/// A closed set of accepted strings and what each maps to.
#[derive(Debug)]
pub struct Choices<T: 'static> {
    /// Literal or enum.
    pub kind: ChoiceKind,
    /// Accepted wire strings (matched exactly) and their values.
    pub options: &'static [(&'static str, T)],
    /// pydantic's rendering of the expected values, e.g. `'a', 'b' or 'c'`.
    pub expected: &'static str,
}

/// Objects with at most this many fields are searched by scanning (see [`Fields::get`]).
const SCANNED_FIELDS: usize = 16;

/// The object being validated as a model: its fields and the whole value (the `input` of a
/// `missing` error).
#[derive(Debug, Clone, Copy)]
pub struct Fields<'v> {
    map: &'v Map<String, Value>,
    whole: &'v Value,
}

impl<'v> Fields<'v> {
    /// The raw value of a field, if present. Bodies have a handful of fields and a model reads
    /// ~20 of them: comparing keys in order is cheaper than SipHashing the key for the map's
    /// index each time. Large objects (which a client controls) still use the index.
    pub fn get(&self, key: &str) -> Option<&'v Value> {
        if self.map.len() <= SCANNED_FIELDS {
            self.map
                .iter()
                .find(|(k, _)| k.as_str() == key)
                .map(|(_, v)| v)
        } else {
            self.map.get(key)
        }
    }

    /// The whole object.
    pub fn value(&self) -> &'v Value {
        self.whole
    }
}

/// Collects every error of one body. Each reader validates one value at one location following
/// pydantic's lax Python-mode rules; on failure it records the error(s) and returns `None`, so a
/// caller can keep going and report all failing fields, as pydantic does.
#[derive(Debug, Default)]
pub struct Errors {
    list: Vec<ValidationError>,
}

impl Errors {
    /// No errors yet.
    pub fn new() -> Self {
        Errors { list: Vec::new() }
    }

    /// Record an error.
    pub fn push(&mut self, error: ValidationError) {
        self.list.push(error);
    }

    /// How many errors so far.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether none so far.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Drop the errors recorded after the first `len` (pydantic discards item errors when a list
    /// turns out too long, and the errors of union members once one member succeeds).
    pub fn truncate(&mut self, len: usize) {
        self.list.truncate(len);
    }

    /// The errors recorded so far.
    pub fn as_slice(&self) -> &[ValidationError] {
        &self.list
    }

    /// The error objects, ready to be the `detail` of a 422.
    pub fn into_values(self) -> Vec<Value> {
        self.list.into_iter().map(Value::from).collect()
    }

    /// `Ok(build())` when nothing failed, else the error objects. `build` runs only on success,
    /// so it may fill fields whose readers returned `None` with defaults.
    pub fn finish<T>(self, build: impl FnOnce() -> T) -> Result<T, Vec<Value>> {
        if self.list.is_empty() {
            Ok(build())
        } else {
            Err(self.into_values())
        }
    }

    /// A model: the value must be an object (`model_attributes_type` otherwise).
    pub fn model<'v>(&mut self, v: &'v Value, loc: &Loc<'_>) -> Option<Fields<'v>> {
        match v {
            Value::Object(map) => Some(Fields { map, whole: v }),
            _ => {
                self.push(ValidationError::model_attributes_type(loc, v));
                None
            }
        }
    }

    /// A `dict[str, Any]`: the value must be an object (`dict_type` otherwise).
    pub fn dict<'v>(&mut self, v: &'v Value, loc: &Loc<'_>) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(map) => Some(map),
            _ => {
                self.push(ValidationError::dict_type(loc, v));
                None
            }
        }
    }

    /// A required field: `missing` when absent, else `read` at `loc.key`.
    pub fn required<'v, T>(
        &mut self,
        fields: Fields<'v>,
        key: &str,
        loc: &Loc<'_>,
        read: impl FnOnce(&mut Self, &'v Value, &Loc<'_>) -> Option<T>,
    ) -> Option<T> {
        let here = loc.key(key);
        match fields.get(key) {
            Some(v) => read(self, v, &here),
            None => {
                self.push(ValidationError::missing(&here, fields.whole));
                None
            }
        }
    }

    /// An `Optional[...]` field with a default: absent gives `Some(default)`, `null` gives
    /// `Some(None)`, anything else is `read`. `None` means the field failed.
    pub fn optional<'v, T>(
        &mut self,
        fields: Fields<'v>,
        key: &str,
        loc: &Loc<'_>,
        default: Option<T>,
        read: impl FnOnce(&mut Self, &'v Value, &Loc<'_>) -> Option<T>,
    ) -> Option<Option<T>> {
        match fields.get(key) {
            None => Some(default),
            Some(Value::Null) => Some(None),
            Some(v) => read(self, v, &loc.key(key)).map(Some),
        }
    }

    /// A non-nullable field with a default: absent gives `default`, anything else (`null`
    /// included) is `read`.
    pub fn defaulted<'v, T>(
        &mut self,
        fields: Fields<'v>,
        key: &str,
        loc: &Loc<'_>,
        default: T,
        read: impl FnOnce(&mut Self, &'v Value, &Loc<'_>) -> Option<T>,
    ) -> Option<T> {
        match fields.get(key) {
            None => Some(default),
            Some(v) => read(self, v, &loc.key(key)),
        }
    }

    /// `ge` / `le` bounds of a number field, checked on the `value` a reader parsed from `v`
    /// (`None`: the reader failed, nothing more to report). The bounds are given with their
    /// JSON form, which the message and `ctx` show as pydantic does (`1.0` for a float bound).
    pub fn bounded<T: PartialOrd + Copy>(
        &mut self,
        value: Option<T>,
        v: &Value,
        loc: &Loc<'_>,
        (ge, ge_json): (T, Value),
        (le, le_json): (T, Value),
    ) -> Option<T> {
        let x = value?;
        let (kind, words, key, bound) = if x < ge {
            (
                "greater_than_equal",
                "greater than or equal to",
                "ge",
                ge_json,
            )
        } else if x > le {
            ("less_than_equal", "less than or equal to", "le", le_json)
        } else {
            return Some(x);
        };
        self.push(
            ValidationError::new(
                kind,
                loc,
                format!("Input should be {words} {}", py_number(&bound)),
                v,
            )
            .with_ctx(ctx1(key, bound)),
        );
        None
    }

    /// A string with constraints. Only JSON strings are strings (pydantic never turns numbers
    /// into strings unless asked to); `strip` trims Unicode whitespace (as pydantic-core's
    /// `str::trim`) before the length check, and the error `input` is the untrimmed value.
    pub fn string(&mut self, v: &Value, loc: &Loc<'_>, c: Str) -> Option<String> {
        let Value::String(s) = v else {
            self.push(ValidationError::string_type(loc, v));
            return None;
        };
        let s = if c.strip { s.trim() } else { s.as_str() };
        if let Some(max) = c.max_length {
            // A string of at most `max` bytes has at most `max` characters: count only when needed.
            if s.len() > max && s.chars().count() > max {
                self.push(ValidationError::string_too_long(loc, v, max));
                return None;
            }
        }
        Some(s.to_owned())
    }

    /// An `int`, lax: integers; floats without a fractional part; booleans; strings that
    /// pydantic-core's `str_as_int` accepts (surrounding whitespace, a `+`, leading zeros, `_`
    /// separators, a `.0` tail).
    ///
    /// Python integers are unbounded; values outside `i64` are rejected with
    /// `int_parsing_size`, where the original would accept them.
    pub fn int(&mut self, v: &Value, loc: &Loc<'_>) -> Option<i64> {
        let result = match v {
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(i)
                } else if n.is_u64() {
                    Err(IntError::Size)
                } else {
                    float_as_int(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::Bool(b) => Ok(i64::from(*b)),
            Value::String(s) => str_as_int(s),
            _ => Err(IntError::Type),
        };
        match result {
            Ok(i) => Some(i),
            Err(e) => {
                self.push(match e {
                    IntError::Type => ValidationError::int_type(loc, v),
                    IntError::Parsing => ValidationError::int_parsing(loc, v),
                    IntError::FromFloat => ValidationError::int_from_float(loc, v),
                    IntError::Size => ValidationError::int_parsing_size(loc, v),
                });
                None
            }
        }
    }

    /// A `bool`, lax: booleans; the integers 0 and 1 (also as floats `0.0`, `1.0`); the strings
    /// `0 1 f t n y no on off yes true false` (case-insensitive, not trimmed). Other strings and
    /// numbers are `bool_parsing`, everything else `bool_type`.
    pub fn boolean(&mut self, v: &Value, loc: &Loc<'_>) -> Option<bool> {
        let result = match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) => str_as_bool(s),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    int_as_bool(i)
                } else if n.is_u64() {
                    Err(false)
                } else {
                    match float_as_int(n.as_f64().unwrap_or(f64::NAN)) {
                        Ok(i) => int_as_bool(i),
                        Err(_) => Err(false),
                    }
                }
            }
            _ => Err(false),
        };
        match result {
            Ok(b) => Some(b),
            Err(parsing) => {
                self.push(if parsing {
                    ValidationError::bool_parsing(loc, v)
                } else {
                    ValidationError::bool_type(loc, v)
                });
                None
            }
        }
    }

    /// A list whose items are read by `item`, with pydantic-core's order of checks: not a list
    /// is `list_type`; items are validated in order and every item error is kept; as soon as
    /// the item count passes `max` the item errors are dropped and a single `too_long` is
    /// reported; `too_short` is checked only when every item passed.
    pub fn list<'v, T>(
        &mut self,
        v: &'v Value,
        loc: &Loc<'_>,
        len: Len,
        mut item: impl FnMut(&mut Self, &'v Value, &Loc<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Value::Array(items) = v else {
            self.push(ValidationError::list_type(loc, v));
            return None;
        };
        let mark = self.len();
        let mut out = Vec::with_capacity(items.len().min(len.max.unwrap_or(usize::MAX)));
        let mut failed = false;
        for (i, it) in items.iter().enumerate() {
            if let Some(max) = len.max {
                if i >= max {
                    self.truncate(mark);
                    self.push(ValidationError::list_too_long(loc, v, max, items.len()));
                    return None;
                }
            }
            match item(self, it, &loc.position(i)) {
                Some(x) => out.push(x),
                None => failed = true,
            }
        }
        if failed {
            return None;
        }
        if let Some(min) = len.min {
            if out.len() < min {
                self.push(ValidationError::list_too_short(loc, v, min, out.len()));
                return None;
            }
        }
        Some(out)
    }

    /// One of a closed set of strings (a `Literal` of strings or string-enum members, or a
    /// string `Enum`): exact string match only.
    pub fn one_of<T: Copy>(&mut self, v: &Value, loc: &Loc<'_>, choices: &Choices<T>) -> Option<T> {
        if let Value::String(s) = v {
            if let Some((_, t)) = choices.options.iter().find(|(name, _)| *name == s.as_str()) {
                return Some(*t);
            }
        }
        self.push(ValidationError::choice(
            choices.kind,
            loc,
            v,
            choices.expected,
        ));
        None
    }
}

// ---------------------------------------------------------------------------------------------
// pydantic-core's lax conversions
// ---------------------------------------------------------------------------------------------

enum IntError {
    Type,
    Parsing,
    FromFloat,
    Size,
}

/// pydantic-core `float_as_int`.
fn float_as_int(f: f64) -> Result<i64, IntError> {
    if !f.is_finite() {
        // `finite_number`; JSON numbers are always finite, so this is not reachable from a body.
        Err(IntError::Type)
    } else if f % 1.0 != 0.0 {
        Err(IntError::FromFloat)
    } else if (i64::MIN as f64) < f && f < (i64::MAX as f64) {
        Ok(f as i64)
    } else {
        Err(IntError::Size)
    }
}

/// An integer in JSON's strict grammar (`-?(0|[1-9][0-9]*)`), as jiter's `NumberInt::try_from`.
/// `Ok(None)`: a valid integer that does not fit in `i64`.
fn json_int(s: &str) -> Result<Option<i64>, ()> {
    let b = s.as_bytes();
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    match digits {
        [] => return Err(()),
        [b'0', rest @ ..] if !rest.is_empty() => return Err(()),
        _ => {}
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(());
    }
    Ok(s.parse::<i64>().ok())
}

/// pydantic-core `str_as_int` (2.27).
fn str_as_int(s: &str) -> Result<i64, IntError> {
    match json_int(s) {
        Ok(Some(i)) => return Ok(i),
        Ok(None) => return Err(IntError::Size),
        Err(()) => {}
    }
    match clean_int_str(s) {
        Some(cleaned) => match json_int(&cleaned) {
            Ok(Some(i)) => Ok(i),
            Ok(None) => Err(IntError::Size),
            Err(()) => Err(IntError::Parsing),
        },
        None => Err(IntError::Parsing),
    }
}

/// pydantic-core `clean_int_str`: trim, an optional `+`, leading zeros, a `.0+` tail and `_`
/// separators; `None` when nothing changed or the form is invalid.
fn clean_int_str(s: &str) -> Option<String> {
    let len_before = s.len();
    let mut s = s.trim();
    if let Some(suffix) = s.strip_prefix('+') {
        if suffix.starts_with('-') {
            return None;
        }
        s = suffix;
    }
    let mut negative = false;
    if let Some(suffix) = s.strip_prefix('-') {
        if suffix.starts_with('-') || suffix.starts_with('+') {
            return None;
        }
        negative = true;
        s = suffix;
    }
    s = strip_leading_zeros(s)?;
    if let Some(i) = s.find('.') {
        let decimals = s.get(i + 1..).unwrap_or("");
        if !decimals.is_empty() && decimals.chars().all(|c| c == '0') {
            s = s.get(..i).unwrap_or(s);
        }
    }
    let sign = if negative { "-" } else { "" };
    if let Some(stripped) = strip_underscores(s) {
        return Some(format!("{sign}{stripped}"));
    }
    if len_before == s.len() {
        return None;
    }
    Some(format!("{sign}{s}"))
}

/// pydantic-core `strip_leading_zeros`.
fn strip_leading_zeros(s: &str) -> Option<&str> {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, '0')) => {}
        Some((_, c)) if c.is_ascii_digit() || c == '-' => return Some(s),
        _ => return None,
    }
    let mut prev = 0;
    for (i, c) in chars {
        match c {
            '0' | '_' => {}
            '1'..='9' | '-' => return s.get(i..),
            '.' => return s.get(prev..),
            _ => return None,
        }
        prev = i;
    }
    s.get(s.len().saturating_sub(1)..)
}

/// pydantic-core `strip_underscores`.
fn strip_underscores(s: &str) -> Option<String> {
    if s.starts_with('_') || s.ends_with('_') || !s.contains('_') || s.contains("__") {
        None
    } else {
        Some(s.replace('_', ""))
    }
}

/// pydantic-core `str_as_bool`; `Err(true)` means `bool_parsing`.
fn str_as_bool(s: &str) -> Result<bool, bool> {
    const FALSE: [&str; 5] = ["f", "n", "no", "off", "false"];
    const TRUE: [&str; 5] = ["t", "y", "on", "yes", "true"];
    if s == "0" || FALSE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Ok(false)
    } else if s == "1" || TRUE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Ok(true)
    } else {
        Err(true)
    }
}

/// pydantic-core `int_as_bool`; `Err(true)` means `bool_parsing`.
fn int_as_bool(i: i64) -> Result<bool, bool> {
    match i {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(true),
    }
}

// ---------------------------------------------------------------------------------------------
// Python renderings
// ---------------------------------------------------------------------------------------------

/// Python's `str()` of the object `json.loads` makes of `v`: what pydantic puts into
/// `union_tag_invalid` as the tag (`2`, `abc`, `None`, `True`, `2.0`, `['a']`, `{'a': 1}`).
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        _ => {
            let mut out = String::new();
            py_repr_into(&mut out, v);
            out
        }
    }
}

/// Python's `repr()` of the object `json.loads` makes of `v`.
pub fn py_repr(v: &Value) -> String {
    let mut out = String::new();
    py_repr_into(&mut out, v);
    out
}

fn py_repr_into(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else if let Some(f) = n.as_f64() {
                py_float_repr_into(out, f);
            }
        }
        Value::String(s) => py_str_repr_into(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr_into(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_str_repr_into(out, k);
                out.push_str(": ");
                py_repr_into(out, item);
            }
            out.push('}');
        }
    }
}

/// Python's `repr(float)`: the shortest round-tripping digits, positional between 1e-4 and 1e16,
/// exponent form (`1e+16`, `1.5e-05`) outside, and always a `.0` on whole numbers.
fn py_float_repr_into(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("nan");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
        return;
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if f.is_sign_negative() {
        out.push('-');
    }
    let decpt = exp + 1;
    if -4 < decpt && decpt <= 16 {
        let n = i32::try_from(digits.len()).unwrap_or(i32::MAX);
        if decpt <= 0 {
            out.push_str("0.");
            for _ in 0..(-decpt) {
                out.push('0');
            }
            out.push_str(&digits);
        } else if decpt >= n {
            out.push_str(&digits);
            for _ in 0..(decpt - n) {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            let split = usize::try_from(decpt).unwrap_or(0);
            out.push_str(digits.get(..split).unwrap_or(""));
            out.push('.');
            out.push_str(digits.get(split..).unwrap_or(""));
        }
    } else {
        let mut chars = digits.chars();
        if let Some(first) = chars.next() {
            out.push(first);
        }
        let rest: String = chars.collect();
        if !rest.is_empty() {
            out.push('.');
            out.push_str(&rest);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    }
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`; backslash escapes
/// for the quote, `\\`, `\n`, `\r`, `\t` and the common non-printable characters.
fn py_str_repr_into(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if py_non_printable(c) => {
                let code = u32::from(c);
                let _ = if code <= 0xff {
                    write!(out, "\\x{code:02x}")
                } else if code <= 0xffff {
                    write!(out, "\\u{code:04x}")
                } else {
                    write!(out, "\\U{code:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// The characters Python's `str.isprintable()` rejects that a request could plausibly carry:
/// controls, non-space separators and the common format characters.
fn py_non_printable(c: char) -> bool {
    matches!(u32::from(c),
        0x00..=0x1f | 0x7f..=0xa0 | 0xad | 0x1680 | 0x180e | 0x2000..=0x200f | 0x2028..=0x202f
        | 0x205f..=0x2064 | 0x2066..=0x206f | 0x3000 | 0xd800..=0xdfff | 0xe000..=0xf8ff
        | 0xfeff | 0xfff9..=0xfffb | 0xf0000..=0x10ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_found_by_scan_and_by_index_alike() {
        for n in [0, 1, SCANNED_FIELDS, SCANNED_FIELDS + 1, 100] {
            let mut map = Map::new();
            for i in 0..n {
                map.insert(format!("k{i}"), json!(i));
            }
            let whole = Value::Object(map.clone());
            let fields = Fields {
                map: &map,
                whole: &whole,
            };
            for i in 0..n {
                assert_eq!(fields.get(&format!("k{i}")), Some(&json!(i)));
            }
            assert_eq!(fields.get("missing"), None);
            assert_eq!(fields.get(""), None);
        }
        // A duplicated key keeps its last value, as the map does.
        let v: Value = serde_json::from_str(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        let Value::Object(map) = &v else {
            unreachable!()
        };
        let fields = Fields { map, whole: &v };
        assert_eq!(fields.get("a"), Some(&json!(3)));
    }

    #[test]
    fn loc_paths_render_in_order() {
        let body = Loc::root("body");
        let tagged = body.index(2);
        let field = tagged.key("model_name");
        assert_eq!(
            Value::Array(field.to_items().iter().map(LocItem::to_value).collect()),
            json!(["body", 2, "model_name"])
        );
    }

    #[test]
    fn py_str_matches_python() {
        let cases = [
            (json!("abc"), "abc"),
            (json!(null), "None"),
            (json!(true), "True"),
            (json!(5), "5"),
            (json!(2.0), "2.0"),
            (json!(-0.0), "-0.0"),
            (json!(1e16), "1e+16"),
            (json!(1e15), "1000000000000000.0"),
            (json!(0.0001), "0.0001"),
            (json!(0.00001), "1e-05"),
            (json!(1.5e-7), "1.5e-07"),
            (json!(123.456), "123.456"),
            (json!(1.7976931348623157e308), "1.7976931348623157e+308"),
            (json!(["a", 1, null]), "['a', 1, None]"),
            (json!({"a": {"b": [true]}}), "{'a': {'b': [True]}}"),
            (json!(["it's"]), "[\"it's\"]"),
            (json!(["a'\"b\n\u{1}"]), "['a\\'\"b\\n\\x01']"),
            (json!([]), "[]"),
            (json!({}), "{}"),
        ];
        for (v, want) in cases {
            assert_eq!(py_str(&v), want, "{v}");
        }
    }

    #[test]
    fn lax_ints() {
        let mut e = Errors::new();
        let l = Loc::root("x");
        for (v, want) in [
            (json!(12), Some(12)),
            (json!(12.0), Some(12)),
            (json!(true), Some(1)),
            (json!("12"), Some(12)),
            (json!(" 12 "), Some(12)),
            (json!("+12"), Some(12)),
            (json!("-012"), Some(-12)),
            (json!("1_000"), Some(1000)),
            (json!("12.000"), Some(12)),
            (json!("000"), Some(0)),
            (json!("12.5"), None),
            (json!("12."), None),
            (json!("1e3"), None),
            (json!("--1"), None),
            (json!(""), None),
            (json!(12.5), None),
            (json!(null), None),
        ] {
            assert_eq!(e.int(&v, &l), want, "{v}");
        }
        let kinds: Vec<_> = e.as_slice().iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                "int_parsing",
                "int_parsing",
                "int_parsing",
                "int_parsing",
                "int_parsing",
                "int_from_float",
                "int_type"
            ]
        );
    }

    #[test]
    fn lax_bools() {
        let mut e = Errors::new();
        let l = Loc::root("x");
        for (v, want) in [
            (json!(true), Some(true)),
            (json!(0), Some(false)),
            (json!(1.0), Some(true)),
            (json!("YES"), Some(true)),
            (json!("off"), Some(false)),
            (json!("t"), Some(true)),
            (json!(" true"), None),
            (json!(2), None),
            (json!(0.5), None),
            (json!(null), None),
            (json!([]), None),
        ] {
            assert_eq!(e.boolean(&v, &l), want, "{v}");
        }
        let kinds: Vec<_> = e.as_slice().iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                "bool_parsing",
                "bool_parsing",
                "bool_type",
                "bool_type",
                "bool_type"
            ]
        );
    }

    #[test]
    fn string_lengths_count_characters_after_strip() {
        let mut e = Errors::new();
        let l = Loc::root("x");
        let ok = "é".repeat(255);
        assert_eq!(e.string(&json!(ok), &l, Str::max(255)), Some(ok.clone()));
        let padded = format!("  {ok}\u{2003}");
        assert_eq!(e.string(&json!(padded), &l, Str::strip_max(255)), Some(ok));
        assert!(e.is_empty());
        assert_eq!(e.string(&json!("é".repeat(256)), &l, Str::max(255)), None);
        assert_eq!(e.as_slice()[0].kind, "string_too_long");
    }
}
