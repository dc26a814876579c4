//! [`RedisError`]: what went wrong talking to Redis.

/// A failure of the Redis connector. The server URL in it is redacted.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The server did not accept the connection.
    #[error(
        "cannot connect to Redis at {url}: {reason}; check redis.url (PYTHIA_REDIS__URL) and that the server runs"
    )]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The client's reason.
        reason: String,
    },
    /// A command failed, or its connection was lost.
    #[error("{command} failed: {reason}")]
    Command {
        /// The command.
        command: &'static str,
        /// The client's or server's reason.
        reason: String,
    },
    /// The server answered something this connector does not understand.
    #[error("unexpected reply to {command}: {reply}")]
    Reply {
        /// The command.
        command: &'static str,
        /// The reply, shortened.
        reply: String,
    },
}

impl RedisError {
    /// A failure of `command`.
    pub(crate) fn command(command: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Command {
            command,
            reason: error.to_string(),
        }
    }

    /// A reply of `command` that does not have the expected shape.
    pub(crate) fn reply(command: &'static str, reply: &redis::Value) -> Self {
        let mut text = format!("{reply:?}");
        if text.len() > 200 {
            let mut end = 200;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        Self::Reply {
            command,
            reply: text,
        }
    }
}

impl From<RedisError> for pythia_core::Error {
    fn from(error: RedisError) -> Self {
        pythia_core::Error::Source(pythia_core::SourceError::retriable(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_check_and_stay_reachable() {
        let error = RedisError::Connect {
            url: "redis://u:***@h".into(),
            reason: "refused".into(),
        };
        assert!(error.to_string().contains("PYTHIA_REDIS__URL"));
        let core: pythia_core::Error = error.into();
        let source = core.source_error().expect("a source error");
        assert!(source.downcast_ref::<RedisError>().is_some());
        assert!(core.is_retriable());
    }

    #[test]
    fn a_long_reply_is_shortened() {
        let reply = redis::Value::BulkString(vec![b'x'; 1000]);
        let text = RedisError::reply("XREADGROUP", &reply).to_string();
        assert!(text.len() < 300 && text.ends_with('…'), "{text}");
    }
}
