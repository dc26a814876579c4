//! Headers between Pythia and AMQP: a message's [`Headers`] to and from an
//! AMQP header table, and the headers the source adds.
//!
//! AMQP headers are typed; Pythia's are bytes. Strings and byte arrays come
//! through as they are, numbers and booleans as their text, `void` as a null
//! value; nested tables and arrays (RabbitMQ's own `x-death`) are left out,
//! except that the number of times the message was dead-lettered by the
//! broker is given as [`DEATHS`].

use lapin::types::{AMQPValue, FieldTable, ShortString};
use pythia_core::Headers;

/// Set to `true` on a message the broker delivered before (to this instance
/// or another) and that was not acknowledged: it may have been processed in
/// part.
pub const REDELIVERED: &str = "pythia.rabbitmq.redelivered";

/// How many times the broker dead-lettered the message (the sum of the
/// counts in its `x-death` header), when it did.
pub const DEATHS: &str = "pythia.rabbitmq.deaths";

/// The headers of an incoming message.
pub(crate) fn from_amqp(table: Option<&FieldTable>, redelivered: bool) -> Headers {
    let mut headers = Headers::new();
    if let Some(table) = table {
        for (name, value) in table.inner() {
            let name = name.as_str();
            if name == "x-death" {
                if let Some(deaths) = deaths(value) {
                    headers.append(DEATHS, deaths.to_string());
                }
                continue;
            }
            match text(value) {
                Some(Some(bytes)) => {
                    headers.append(name, bytes);
                }
                Some(None) => {
                    headers.append_null(name);
                }
                None => {}
            }
        }
    }
    if redelivered {
        headers.append(REDELIVERED, "true");
    }
    headers
}

/// A value as bytes: `Some(None)` for void, `None` for what has no flat form.
fn text(value: &AMQPValue) -> Option<Option<Vec<u8>>> {
    let text = match value {
        AMQPValue::LongString(s) => s.as_bytes().to_vec(),
        AMQPValue::ShortString(s) => s.as_str().as_bytes().to_vec(),
        AMQPValue::ByteArray(b) => b.as_slice().to_vec(),
        AMQPValue::Boolean(b) => b.to_string().into_bytes(),
        AMQPValue::ShortShortInt(n) => n.to_string().into_bytes(),
        AMQPValue::ShortShortUInt(n) => n.to_string().into_bytes(),
        AMQPValue::ShortInt(n) => n.to_string().into_bytes(),
        AMQPValue::ShortUInt(n) => n.to_string().into_bytes(),
        AMQPValue::LongInt(n) => n.to_string().into_bytes(),
        AMQPValue::LongUInt(n) => n.to_string().into_bytes(),
        AMQPValue::LongLongInt(n) => n.to_string().into_bytes(),
        AMQPValue::Timestamp(n) => n.to_string().into_bytes(),
        AMQPValue::Float(n) => n.to_string().into_bytes(),
        AMQPValue::Double(n) => n.to_string().into_bytes(),
        AMQPValue::Void => return Some(None),
        AMQPValue::DecimalValue(_) | AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) => {
            return None;
        }
    };
    Some(Some(text))
}

/// The sum of the `count` fields of an `x-death` array.
fn deaths(value: &AMQPValue) -> Option<i64> {
    let AMQPValue::FieldArray(entries) = value else {
        return None;
    };
    let counts = entries.as_slice().iter().filter_map(|entry| match entry {
        AMQPValue::FieldTable(table) => match table.inner().get("count") {
            Some(AMQPValue::LongLongInt(n)) => Some(*n),
            Some(AMQPValue::LongInt(n)) => Some(i64::from(*n)),
            _ => None,
        },
        _ => None,
    });
    Some(counts.sum())
}

/// The header table of an outgoing record: every header as a long string,
/// a null value as void. A repeated name keeps its last value (AMQP tables
/// have unique keys).
pub(crate) fn to_amqp(headers: &Headers) -> FieldTable {
    let mut table = FieldTable::default();
    for header in headers.iter() {
        let value = match &header.value {
            Some(bytes) => AMQPValue::LongString(bytes.to_vec().into()),
            None => AMQPValue::Void,
        };
        table.insert(ShortString::from(header.name.as_str()), value);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    #[test]
    fn headers_go_out_and_come_back() {
        let mut headers = Headers::new();
        headers.append("pythia.dlq.reason", "bad json");
        headers.append_null("empty");
        let back = from_amqp(Some(&to_amqp(&headers)), false);
        assert_eq!(back.get_str("pythia.dlq.reason"), Some("bad json"));
        assert!(back.iter().any(|h| h.name == "empty" && h.value.is_none()));
        assert_eq!(back.get(REDELIVERED), None);
    }

    #[test]
    fn typed_values_become_text_and_redelivery_and_deaths_are_shown() {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(2));
        death.insert("queue".into(), AMQPValue::LongString("jobs".into()));
        let mut table = FieldTable::default();
        table.insert("n".into(), AMQPValue::LongInt(-4));
        table.insert("ok".into(), AMQPValue::Boolean(true));
        table.insert(
            "nested".into(),
            AMQPValue::FieldTable(FieldTable::default()),
        );
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::FieldTable(death.clone()),
                AMQPValue::FieldTable(death),
            ])),
        );
        let headers = from_amqp(Some(&table), true);
        assert_eq!(headers.get_str("n"), Some("-4"));
        assert_eq!(headers.get_str("ok"), Some("true"));
        assert_eq!(headers.get("nested"), None);
        assert_eq!(headers.get_str(DEATHS), Some("4"));
        assert_eq!(headers.get_str(REDELIVERED), Some("true"));
    }
}
