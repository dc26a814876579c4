//! Poison messages: invalid JSON, a wrong shape, an empty payload, an entry
//! without a payload field, and a job whose `process` fails each go to the
//! dead-letter stream with the reason in its `pythia.dlq.*` fields, and the
//! input keeps flowing: every good job around them is processed. A message
//! delivered more than `redis.max_deliveries` times (its instances kept
//! dying) is dead-lettered by the source without being processed again.
//! For a stream and for a list (whose dead letters go to a stream too, to
//! keep their reason).

mod common;

use std::time::Duration;

use common::{Mode, Redis, count_ids, unique, worker_env, workers};

async fn each_poison_message_is_dead_lettered(mode: Mode) {
    let mut redis = Redis::connect().await;
    let input = unique(&format!("poison-{}", mode.as_str()));
    let output = format!("{input}.out");
    let dead = format!("{input}.dlq");
    redis.own(&input);
    let poison: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid json", b"{not json".to_vec(), "decode"),
        ("wrong shape", br#"{"name": "x"}"#.to_vec(), "decode"),
        ("empty", Vec::new(), "decode"),
        ("process error", br#"{"id": 1013}"#.to_vec(), "permanent"),
    ];
    let good = 200u64;
    let mut payloads = Vec::new();
    for id in 0..good {
        payloads.push(format!(r#"{{"id": {id}}}"#).into_bytes());
        if id % 50 == 25 {
            let (_, payload, _) = &poison[(id / 50) as usize];
            payloads.push(payload.clone());
        }
    }
    let mut workers = workers();
    let mut env = worker_env(mode, &input, &output);
    env.extend([("TEST_CODEC", "json".into()), ("TEST_FAIL", "1013".into())]);
    workers.spawn(&env);
    redis
        .wait_for_consumers(mode, &input, &input, 1, Duration::from_secs(30))
        .await;
    redis.publish(mode, &input, payloads).await;
    if mode == Mode::Stream {
        redis.xadd(&input, &[("id", b"7")]).await;
    }
    let done = redis
        .take(
            mode,
            &output,
            good as usize,
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        count_ids(&done),
        (good as usize, 0),
        "every good job once:\n{}",
        workers.log(0)
    );
    let expected = poison.len() + usize::from(mode == Mode::Stream);
    let letters = redis
        .take(
            Mode::Stream,
            &dead,
            expected,
            Duration::from_secs(1),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(letters.len(), expected, "{letters:#?}");
    for (case, payload, kind) in &poison {
        let letter = letters
            .iter()
            .find(|l| &l.payload == payload && !l.headers.contains_key("id"))
            .unwrap_or_else(|| panic!("no dead letter for {case}: {letters:#?}"));
        assert_eq!(letter.headers["pythia.dlq.kind"], *kind, "{case}");
        assert!(!letter.headers["pythia.dlq.reason"].is_empty(), "{case}");
        assert_eq!(letter.headers["pythia.dlq.topic"], input, "{case}");
    }
    if mode == Mode::Stream {
        let letter = letters
            .iter()
            .find(|l| l.headers.get("id").map(String::as_str) == Some("7"))
            .unwrap_or_else(|| {
                panic!("no dead letter for the entry without payload: {letters:#?}")
            });
        assert_eq!(letter.headers["pythia.dlq.kind"], "decode");
    }
    workers.stop_all();
    assert_eq!(redis.left(mode, &input, &input).await, 0, "nothing left");
}

/// Makes `payload` look delivered `times` times to an instance that died:
/// pending for a dead consumer (stream), or in a dead consumer's processing
/// list with its count of moves back (list).
async fn delivered_to_a_dead_instance(
    redis: &mut Redis,
    mode: Mode,
    input: &str,
    payload: &[u8],
    times: u32,
) {
    let conn = redis.conn();
    match mode {
        Mode::Stream => {
            // The group exists from the first call on (BUSYGROUP).
            let _: redis::RedisResult<redis::Value> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(input)
                .arg(input)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(conn)
                .await;
            let id: String = redis::cmd("XADD")
                .arg(input)
                .arg("*")
                .arg("payload")
                .arg(payload)
                .query_async(conn)
                .await
                .unwrap();
            let _: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(input)
                .arg("ghost")
                .arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg(input)
                .arg(">")
                .query_async(conn)
                .await
                .unwrap();
            let _: redis::Value = redis::cmd("XCLAIM")
                .arg(input)
                .arg(input)
                .arg("ghost")
                .arg(0)
                .arg(&id)
                .arg("IDLE")
                .arg(600_000)
                .arg("RETRYCOUNT")
                .arg(times)
                .arg("JUSTID")
                .query_async(conn)
                .await
                .unwrap();
        }
        Mode::List => {
            let _: () = redis::pipe()
                .cmd("LPUSH")
                .arg(format!("{input}:processing:ghost"))
                .arg(payload)
                .ignore()
                .cmd("SADD")
                .arg(format!("{input}:consumers"))
                .arg("ghost")
                .ignore()
                .cmd("HSET")
                .arg(format!("{input}:deliveries"))
                .arg(payload)
                .arg(times - 1)
                .ignore()
                .query_async(conn)
                .await
                .unwrap();
        }
    }
}

async fn a_message_over_the_delivery_limit_is_dead_lettered(mode: Mode) {
    let mut redis = Redis::connect().await;
    let input = unique(&format!("limit-{}", mode.as_str()));
    let output = format!("{input}.out");
    let dead = format!("{input}.dlq");
    redis.own(&input);
    delivered_to_a_dead_instance(&mut redis, mode, &input, b"killer", 5).await;
    delivered_to_a_dead_instance(&mut redis, mode, &input, b"survivor", 2).await;
    let mut workers = workers();
    let mut env = worker_env(mode, &input, &output);
    env.extend([
        ("PYTHIA_REDIS__MAX_DELIVERIES", "5".into()),
        ("PYTHIA_REDIS__CLAIM_IDLE", "1s".into()),
        ("PYTHIA_REDIS__BLOCK", "200ms".into()),
    ]);
    workers.spawn(&env);
    let letters = redis
        .take(
            Mode::Stream,
            &dead,
            1,
            Duration::from_secs(2),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(letters.len(), 1, "{letters:#?}\n{}", workers.log(0));
    let letter = &letters[0];
    assert_eq!(letter.payload, b"killer");
    assert_eq!(letter.headers["pythia.dlq.kind"], "max_deliveries");
    assert_eq!(letter.headers["pythia.dlq.attempts"], "6");
    assert!(
        letter.headers["pythia.dlq.reason"].contains("redis.max_deliveries = 5"),
        "{letter:?}"
    );
    let done = redis
        .take(
            mode,
            &output,
            1,
            Duration::from_secs(1),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].payload, b"survivor");
    workers.stop_all();
    assert_eq!(redis.left(mode, &input, &input).await, 0, "nothing left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_each_poison_message_is_dead_lettered_with_its_reason_and_the_input_flows() {
    each_poison_message_is_dead_lettered(Mode::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_each_poison_message_is_dead_lettered_with_its_reason_and_the_input_flows() {
    each_poison_message_is_dead_lettered(Mode::List).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_an_entry_over_the_delivery_limit_is_dead_lettered_not_processed() {
    a_message_over_the_delivery_limit_is_dead_lettered(Mode::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_an_element_over_the_delivery_limit_is_dead_lettered_not_processed() {
    a_message_over_the_delivery_limit_is_dead_lettered(Mode::List).await;
}
