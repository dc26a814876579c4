//! The public types can cross threads and tasks.

use pythia_redis::{Config, RedisAcker, RedisError, RedisSink, RedisSource, RedisUrl};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>() {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<Config>();
    send_sync::<RedisUrl>();
    send_sync::<RedisError>();
    send_sync::<RedisSink>();
    send_sync::<RedisAcker>();
    send::<RedisSource>();
}
