//! Decoding a v2 record's header section, as fetched, without librdkafka.

/// A fetched message's headers before parsing.
pub(super) enum Serialized<'m> {
    /// The record has no header section (message formats before v2).
    Absent,
    /// A v2 record's header section: a count, then each header's name and
    /// value, lengths as zig-zag varints.
    Wire(&'m [u8]),
}

/// More headers than librdkafka's parser accepts in one record.
const MAX_HEADERS: i64 = 100_000;

/// Calls `each` with every header of a v2 header section; `None`, before
/// calling `each`, if the section is malformed.
pub(super) fn for_each_header(
    wire: &[u8],
    each: &mut impl FnMut(&str, Option<&[u8]>),
) -> Option<()> {
    let mut reader = Wire(wire);
    let count = reader.varint()?;
    if count <= 0 {
        return Some(());
    }
    if count > MAX_HEADERS {
        return None;
    }
    // Checked in full before the first call: a malformed section is left
    // to librdkafka's parser, which rejects it whole.
    let mut check = Wire(reader.0);
    for _ in 0..count {
        check.bytes()??;
        check.bytes()?;
    }
    for _ in 0..count {
        let name = reader.bytes()??;
        let value = reader.bytes()?;
        each(&String::from_utf8_lossy(name), value);
    }
    Some(())
}

/// A reader of Kafka's v2 record encoding.
struct Wire<'b>(&'b [u8]);

impl<'b> Wire<'b> {
    /// A zig-zag varint of at most 64 bits.
    fn varint(&mut self) -> Option<i64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first()?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }

    /// Length-prefixed bytes: `Some(None)` for length -1 (null).
    fn bytes(&mut self) -> Option<Option<&'b [u8]>> {
        let len = self.varint()?;
        if len == -1 {
            return Some(None);
        }
        let len = usize::try_from(len).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_header_sections_are_left_to_librdkafka() {
        let read = |wire: &[u8]| {
            let mut all = Vec::new();
            let done = for_each_header(wire, &mut |name, value: Option<&[u8]>| {
                all.push((name.to_owned(), value.map(<[u8]>::to_vec)))
            });
            done.map(|()| all)
        };
        // Two headers: "a" = "xy", "b" = null.
        assert_eq!(
            read(&[4, 2, b'a', 4, b'x', b'y', 2, b'b', 1]),
            Some(vec![("a".into(), Some(b"xy".to_vec())), ("b".into(), None)])
        );
        assert_eq!(read(&[0]), Some(vec![]), "no headers");
        // A value longer than the section, a null name, a count with no
        // headers after it, a varint that never ends: nothing is reported.
        assert_eq!(read(&[2, 2, b'a', 10, b'x']), None);
        assert_eq!(read(&[2, 1, 0]), None);
        assert_eq!(read(&[4, 2, b'a', 0]), None);
        assert_eq!(read(&[0x80; 11]), None);
    }
}
