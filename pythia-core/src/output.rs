//! What `process` returns: [`Outputs`], none, one or many [`Output`]
//! records, each a value with an optional key, headers and target.

use std::sync::Arc;

use bytes::Bytes;

use crate::message::Headers;

/// One output record: a value with an optional key, headers and target topic.
///
/// ```
/// use pythia_core::Output;
/// let out = Output::new(42u64).key("order-7").header("source", "billing");
/// assert_eq!(out.value(), &42);
/// ```
#[derive(Clone, Debug)]
pub struct Output<T> {
    pub(crate) value: T,
    pub(crate) key: Option<Bytes>,
    pub(crate) headers: Headers,
    pub(crate) topic: Option<Arc<str>>,
    pub(crate) sink: Option<&'static str>,
}

impl<T> Output<T> {
    /// An output carrying `value`, sent to the sink's default topic with no key.
    pub fn new(value: T) -> Self {
        Self {
            value,
            key: None,
            headers: Headers::new(),
            topic: None,
            sink: None,
        }
    }

    /// Sets the key (which also picks the output partition).
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Routes this output to the named sink `sink` (declared with
    /// `#[pythia(sinks(name = "topic"))]`; the derive also makes a constant per
    /// sink, so `Self::BILLING` is checked at compile time).
    ///
    /// ```
    /// use pythia_core::Output;
    /// let out = Output::new("invoice-7").to("billing");
    /// assert_eq!(out.sink_name(), Some("billing"));
    /// ```
    pub fn to(mut self, sink: &'static str) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The named sink this output goes to, if any.
    pub fn sink_name(&self) -> Option<&'static str> {
        self.sink
    }

    /// Sends this output to `topic`, whatever sink it names.
    pub fn to_topic(mut self, topic: impl Into<Arc<str>>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// The value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The value, taking it out of the output.
    pub fn into_value(self) -> T {
        self.value
    }

    /// The key, if one was set.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
}

/// The outputs of one `process` call: none (a filter or a pure consumer), one, or many.
///
/// ```
/// use pythia_core::{Output, Outputs};
/// let none: Outputs<u32> = Outputs::none();
/// let one = Outputs::one(1u32);
/// let many: Outputs<u32> = vec![Output::new(1), Output::new(2).key("k")].into();
/// assert_eq!((none.len(), one.len(), many.len()), (0, 1, 2));
/// ```
#[derive(Clone, Debug)]
pub struct Outputs<T>(Repr<T>);

#[derive(Clone, Debug)]
pub(crate) enum Repr<T> {
    None,
    One(Output<T>),
    Many(Vec<Output<T>>),
}

impl<T> Outputs<T> {
    /// No output: the input is done once processed.
    pub fn none() -> Self {
        Self(Repr::None)
    }

    /// A single output with no key.
    pub fn one(value: T) -> Self {
        Self(Repr::One(Output::new(value)))
    }

    /// One output per value, with no keys.
    pub fn many(values: impl IntoIterator<Item = T>) -> Self {
        Self(Repr::Many(values.into_iter().map(Output::new).collect()))
    }

    /// The number of outputs.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::None => 0,
            Repr::One(_) => 1,
            Repr::Many(v) => v.len(),
        }
    }

    /// Whether there are no outputs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn into_repr(self) -> Repr<T> {
        self.0
    }
}

impl<T> Default for Outputs<T> {
    fn default() -> Self {
        Self::none()
    }
}

impl<T> From<Output<T>> for Outputs<T> {
    fn from(output: Output<T>) -> Self {
        Self(Repr::One(output))
    }
}

impl<T> From<Vec<Output<T>>> for Outputs<T> {
    fn from(outputs: Vec<Output<T>>) -> Self {
        Self(Repr::Many(outputs))
    }
}

impl<T> From<Option<Output<T>>> for Outputs<T> {
    fn from(output: Option<Output<T>>) -> Self {
        output.map_or_else(Self::none, Self::from)
    }
}

impl<T> FromIterator<Output<T>> for Outputs<T> {
    fn from_iter<I: IntoIterator<Item = Output<T>>>(iter: I) -> Self {
        Self(Repr::Many(iter.into_iter().collect()))
    }
}

/// The outputs one by one, in order: what a unit test of `process` checks.
///
/// ```
/// use pythia_core::{Output, Outputs};
/// let outputs: Outputs<u32> = vec![Output::new(1), Output::new(2).key("k")].into();
/// let values: Vec<u32> = outputs.into_iter().map(Output::into_value).collect();
/// assert_eq!(values, [1, 2]);
/// ```
impl<T> IntoIterator for Outputs<T> {
    type Item = Output<T>;
    type IntoIter = std::vec::IntoIter<Output<T>>;

    fn into_iter(self) -> Self::IntoIter {
        match self.0 {
            Repr::None => Vec::new().into_iter(),
            Repr::One(output) => vec![output].into_iter(),
            Repr::Many(outputs) => outputs.into_iter(),
        }
    }
}
