//! A generic struct: the impls carry its type and const parameters, bounds and
//! where clause, and each instantiation has the same spec and sink constants.

use std::fmt::Display;

use pythia_core::codec::Json;
use pythia_core::{Context, Message, Output, Outputs, Process, ProcessError, Worker};

/// Prefixes each line with `tag` and `[N]`.
#[derive(Worker)]
#[pythia(
    topic = "lines",
    sinks(tagged = "lines.tagged"),
    default_sink = "tagged"
)]
struct Tagger<T: Display + Send + Sync + 'static, const N: usize>
where
    T: Clone,
{
    tag: T,
}

impl<T, const N: usize> Process for Tagger<T, N>
where
    T: Display + Clone + Send + Sync + 'static,
{
    type Input = String;
    type Output = String;

    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        let line = format!("{}[{N}]: {}", self.tag, msg.payload());
        Ok(Output::new(line).to(Self::TAGGED).into())
    }
}

/// Compiles only if `W`'s codec is `C`.
fn codec_is<W: Worker<Codec = C>, C>() {}

fn main() {
    let tagger = Tagger::<&'static str, 8> { tag: "web" };
    assert_eq!(tagger.tag, "web");

    assert_eq!(Tagger::<&'static str, 8>::SPEC.name, "tagger");
    assert_eq!(Tagger::<u32, 1>::SPEC, Tagger::<String, 2>::SPEC);
    assert_eq!(
        <Tagger<u32, 1> as Worker>::SPEC.sinks,
        [("tagged", "lines.tagged")]
    );
    assert_eq!(
        <Tagger<u32, 1> as Worker>::SPEC.default_sink,
        Some("tagged")
    );
    assert_eq!(Tagger::<u32, 1>::TAGGED, "tagged");
    codec_is::<Tagger<String, 4>, Json>();
}
