//! The text of a caught panic, for errors and dead letters.

/// What a panic said: its `&str` or `String` payload, or a placeholder.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::panic_text;

    #[test]
    fn the_text_of_str_and_string_panics_and_a_placeholder_for_others() {
        let text = |payload: Box<dyn std::any::Any + Send>| panic_text(&*payload);
        assert_eq!(text(Box::new("static")), "static");
        assert_eq!(text(Box::new(String::from("owned"))), "owned");
        assert_eq!(text(Box::new(7u8)), "non-string panic payload");
    }
}
