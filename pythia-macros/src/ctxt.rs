//! Collects the errors of one derive, so that all of them are reported at once.

use std::cell::RefCell;
use std::fmt::Display;
use std::thread;

use proc_macro2::Span;
use quote::ToTokens;

/// The errors found so far.
///
/// [`Ctxt::check`] must be called before it is dropped: dropping it
/// unchecked panics, so that no error found can be lost.
pub(crate) struct Ctxt {
    /// `None` once checked.
    errors: RefCell<Option<Vec<syn::Error>>>,
}

impl Default for Ctxt {
    fn default() -> Self {
        Self {
            errors: RefCell::new(Some(Vec::new())),
        }
    }
}

impl Ctxt {
    /// An error at `span`.
    pub(crate) fn error(&self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// An error spanning the tokens of `item`.
    pub(crate) fn error_spanned_by(&self, item: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(item, message));
    }

    /// Records a parse error.
    pub(crate) fn push(&self, error: syn::Error) {
        self.errors
            .borrow_mut()
            .as_mut()
            .expect("an error recorded after `Ctxt::check`")
            .push(error);
    }

    /// All errors as one, or `Ok` when there were none.
    pub(crate) fn check(self) -> syn::Result<()> {
        let errors = self.errors.borrow_mut().take();
        let mut errors = errors.expect("`Ctxt` is checked once").into_iter();
        let Some(mut first) = errors.next() else {
            return Ok(());
        };
        for error in errors {
            first.combine(error);
        }
        Err(first)
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        // While unwinding, a second panic would abort and hide the first.
        if !thread::panicking() && self.errors.borrow().is_some() {
            panic!("`Ctxt` dropped without `Ctxt::check`: its errors would be lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_reported_in_order() {
        let cx = Ctxt::default();
        cx.error(Span::call_site(), "first");
        cx.error(Span::call_site(), "second");
        let messages: Vec<String> = cx
            .check()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(messages, ["first", "second"]);
        assert!(Ctxt::default().check().is_ok());
    }

    #[test]
    #[should_panic(expected = "dropped without `Ctxt::check`")]
    fn dropping_it_unchecked_panics() {
        let cx = Ctxt::default();
        cx.error(Span::call_site(), "lost");
        drop(cx);
    }

    #[test]
    #[should_panic(expected = "dropped without `Ctxt::check`")]
    fn dropping_it_unchecked_panics_without_errors_too() {
        drop(Ctxt::default());
    }

    #[test]
    fn dropping_it_while_panicking_does_not_abort() {
        let unwound = std::panic::catch_unwind(|| {
            let _cx = Ctxt::default();
            panic!("first");
        });
        let payload = unwound.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"first"));
    }
}
