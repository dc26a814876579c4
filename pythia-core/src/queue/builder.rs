//! A queue connector's run before it is set up: the worker, its
//! configuration `C` (loaded at build unless given), the event listeners and
//! where the sink comes from.

use crate::error::{ConfigError, Error};
use crate::events::{Listener, WorkerEvent};
use crate::layer::{Layer, LayerExt, Layered};
use crate::worker::Worker;

/// Where a run's sink `K` comes from; `P` is the connector's own publisher.
pub enum SinkSetup<C, K, P> {
    /// Made from the configuration and a connection name when the run is
    /// set up; the publisher it returns is closed at the end of the run.
    Made(fn(&C, &str) -> (K, Option<P>)),
    /// Given by the caller, who keeps it.
    Given(K),
}

impl<C, K, P> SinkSetup<C, K, P> {
    /// The sink, and the publisher to close after the run (`None` for a
    /// sink given by the caller).
    pub fn resolve(self, config: &C, name: &str) -> (K, Option<P>) {
        match self {
            Self::Made(make) => make(config, name),
            Self::Given(sink) => (sink, None),
        }
    }
}

/// The parts of a connector's builder: its `Builder` type wraps one, adds
/// the documentation of its broker, and sets the run up in `build`.
///
/// ```
/// use pythia_core::connector::{NoSink, QueueBuilder, SinkSetup};
/// # fn demo<W: pythia_core::Worker>(worker: W) -> Result<(), pythia_core::Error> {
/// #[derive(Debug)]
/// struct Config;
/// let builder: QueueBuilder<W, Config, NoSink, NoSink> =
///     QueueBuilder::new(worker, |_config, _name| (NoSink, None));
/// let (worker, config, sink, listeners) = builder
///     .on_event(|event| println!("{event:?}"))
///     .build(|| Ok(Config), |worker, config, sink, listeners| {
///         let (sink, publisher) = sink.resolve(&config, "jobs-1");
///         Ok((worker, config, (sink, publisher), listeners))
///     })?;
/// assert_eq!(listeners.len(), 1);
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until built and run"]
pub struct QueueBuilder<W, C, K, P> {
    worker: W,
    config: Option<C>,
    listeners: Vec<Listener>,
    sink: SinkSetup<C, K, P>,
}

impl<W, C, K, P> QueueBuilder<W, C, K, P> {
    /// `worker`, with the sink `make` builds from the configuration.
    pub fn new(worker: W, make: fn(&C, &str) -> (K, Option<P>)) -> Self {
        Self {
            worker,
            config: None,
            listeners: Vec::new(),
            sink: SinkSetup::Made(make),
        }
    }

    /// Runs with `config` instead of loading one at build.
    pub fn config(mut self, config: C) -> Self {
        self.config = Some(config);
        self
    }

    /// Wraps the worker's `process` in `layer`; the layer added last runs
    /// first.
    pub fn layer<L: Layer<W>>(self, layer: L) -> QueueBuilder<Layered<W, L>, C, K, P>
    where
        W: Worker,
    {
        QueueBuilder {
            worker: self.worker.layer(layer),
            config: self.config,
            listeners: self.listeners,
            sink: self.sink,
        }
    }

    /// Sends outputs and dead letters to `sink`, which the run does not close.
    pub fn sink<S>(self, sink: S) -> QueueBuilder<W, C, S, P> {
        QueueBuilder {
            worker: self.worker,
            config: self.config,
            listeners: self.listeners,
            sink: SinkSetup::Given(sink),
        }
    }

    /// Calls `listener` with each of the run's events.
    pub fn on_event(mut self, listener: impl Fn(&WorkerEvent) + Send + Sync + 'static) -> Self {
        self.listeners.push(Box::new(listener));
        self
    }

    /// The configuration given, else `load`'s; then `connect` sets the run
    /// up with the parts.
    ///
    /// # Errors
    ///
    /// `load`'s or `connect`'s.
    pub fn build<I>(
        self,
        load: impl FnOnce() -> Result<C, ConfigError>,
        connect: impl FnOnce(W, C, SinkSetup<C, K, P>, Vec<Listener>) -> Result<I, Error>,
    ) -> Result<I, Error> {
        let config = match self.config {
            Some(config) => config,
            None => load()?,
        };
        connect(self.worker, config, self.sink, self.listeners)
    }
}

impl<W, C: std::fmt::Debug, K, P> std::fmt::Debug for QueueBuilder<W, C, K, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("worker", &std::any::type_name::<W>())
            .field("sink", &std::any::type_name::<K>())
            .field("config", &self.config)
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration: where it came from.
    #[derive(Debug, PartialEq)]
    struct Setting(&'static str);

    type Made = (usize, Option<usize>);

    fn make(config: &Setting, name: &str) -> Made {
        let n = config.0.len() + name.len();
        (n, Some(n))
    }

    type Parts = (Setting, Made, usize);

    fn parts(builder: QueueBuilder<(), Setting, usize, usize>) -> Result<Parts, Error> {
        builder.build(
            || Ok(Setting("loaded")),
            |(), config, sink, listeners| {
                let made = sink.resolve(&config, "ab");
                Ok((config, made, listeners.len()))
            },
        )
    }

    #[test]
    fn the_configuration_is_loaded_unless_given() {
        let (config, ..) = parts(QueueBuilder::new((), make)).unwrap();
        assert_eq!(config, Setting("loaded"));
        let (config, ..) = parts(QueueBuilder::new((), make).config(Setting("given"))).unwrap();
        assert_eq!(config, Setting("given"));
    }

    #[test]
    fn a_made_sink_is_closed_by_the_run_and_a_given_one_is_not() {
        let (_, made, _) = parts(QueueBuilder::new((), make)).unwrap();
        assert_eq!(
            made,
            (8, Some(8)),
            "made from the configuration and the name"
        );
        let (_, given, _) = parts(QueueBuilder::new((), make).sink(7)).unwrap();
        assert_eq!(given, (7, None));
    }

    #[test]
    fn listeners_are_kept_in_order_and_shown_in_debug() {
        let builder = QueueBuilder::new((), make)
            .on_event(|_| {})
            .on_event(|_| {});
        assert!(format!("{builder:?}").contains("listeners: 2"));
        let (_, _, listeners) = parts(builder).unwrap();
        assert_eq!(listeners, 2);
    }

    #[test]
    fn a_load_error_stops_the_build() {
        let failed = QueueBuilder::<(), Setting, usize, usize>::new((), make).build(
            || Err(ConfigError::invalid("worker.name", "bad")),
            |_, _, _, _| Ok(()),
        );
        assert!(failed.is_err());
    }
}
