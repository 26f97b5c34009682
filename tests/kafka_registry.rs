//! Schema registry, against a real Confluent-compatible registry: the
//! Apicurio Registry that `scripts/test` starts (`scripts/registry`), whose
//! Confluent API URL comes in `REGISTRY_URL`.
//!
//! Input is framed with registry ids, partly with an *evolved* writer
//! schema (an extra optional field with a default, and new `Channel` and
//! `TouchpointType` symbols, inserted before `other` so that symbol indexes
//! shift); the service must resolve it against the shipped reader schema
//! (unknown symbols → `other`) and emit exactly what replay emits. The
//! output schemas must be registered under `<topic>-value` and the output
//! frames must carry the ids the registry returned. An output schema the
//! registry refuses (BACKWARD) keeps the service alive and not ready, saying
//! why; a registry that does not answer, at start or mid-run, keeps it
//! alive and not ready, loses no record, and does not delay a SIGTERM. The
//! one double here is a TCP relay in front of the real registry, cut on
//! demand to inject the outage.

mod kafka_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use kafka_support::*;
use serde_json::{json, Value};
use touchstream::codec::avro::{frame, touchpoint_value, TOUCHPOINT_SCHEMA};
use touchstream::model::DerivedType;
use touchstream::validate::RejectReason;

const CT: &str = "application/vnd.schemaregistry.v1+json";

/// The real registry's Confluent API URL (`scripts/test` starts it).
fn registry_url() -> String {
    match std::env::var("REGISTRY_URL") {
        Ok(u) if !u.trim().is_empty() => u.trim().trim_end_matches('/').to_string(),
        _ => panic!(
            "needs a schema registry: run scripts/test (it starts Apicurio), or set REGISTRY_URL \
             to a Confluent-compatible API (Apicurio: http://host:port/apis/ccompat/v7)"
        ),
    }
}

fn get_json(url: &str) -> Value {
    let resp = ureq::get(url).set("Accept", CT).call().expect(url);
    serde_json::from_str(&resp.into_string().unwrap()).unwrap()
}

/// The ids and the latest (id, schema text) of a subject.
fn subject_of(url: &str, subject: &str) -> (Vec<u64>, u32, String) {
    let versions: Vec<u64> =
        serde_json::from_value(get_json(&format!("{url}/subjects/{subject}/versions"))).unwrap();
    let latest = get_json(&format!("{url}/subjects/{subject}/versions/latest"));
    (
        versions,
        latest["id"].as_u64().unwrap() as u32,
        latest["schema"].as_str().unwrap().to_string(),
    )
}

/// A TCP relay to the registry that can be cut: cutting closes every open
/// connection (a pooled keep-alive one too), and while cut it accepts and
/// closes at once (a registry that is down).
struct Relay {
    url: String,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn new(target: &str) -> Relay {
        let rest = target.split_once("://").map_or(target, |(_, r)| r);
        let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
        let upstream = hostport.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/{path}", listener.local_addr().unwrap());
        let down = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (flag, conns) = (down.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if flag.load(Ordering::Relaxed) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                conns.lock().unwrap().push(client.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay {
            url: url.trim_end_matches('/').to_string(),
            down,
            open,
        }
    }

    /// Takes the registry down (true) or brings it back.
    fn cut(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
        if down {
            for c in self.open.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Registers a schema through the REST API (as a producer would).
fn register_schema(url: &str, subject: &str, text: &str) -> u32 {
    let resp = ureq::post(&format!("{url}/subjects/{subject}/versions"))
        .set("Content-Type", CT)
        .send_string(&json!({ "schema": text }).to_string())
        .unwrap_or_else(|e| panic!("register {subject}: {e}"));
    let v: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    v["id"].as_u64().unwrap() as u32
}

/// A schema id no test registers (Apicurio's ids count up from 1).
const UNKNOWN_ID: u32 = 4_000_000_000;

const NEW_CHANNEL: &str = "metaverse";
const NEW_TYPE: &str = "ar_try_on";

/// The shipped schema plus an optional field and two new enum symbols.
fn evolved_schema_text() -> String {
    let mut s: Value = serde_json::from_str(TOUCHPOINT_SCHEMA).unwrap();
    let fields = s["fields"].as_array_mut().unwrap();
    for f in fields.iter_mut() {
        let name = f["name"].as_str().unwrap().to_string();
        let new = match name.as_str() {
            "channel" => NEW_CHANNEL,
            "type" => NEW_TYPE,
            _ => continue,
        };
        let symbols = f["type"]["symbols"].as_array_mut().unwrap();
        let other = symbols.iter().position(|x| x == "other").unwrap();
        symbols.insert(other, json!(new));
    }
    fields.push(json!({ "name": "loyalty_tier", "type": ["null", "string"], "default": null }));
    s.to_string()
}

fn symbols_of(schema: &Value, field: &str) -> Vec<String> {
    let f = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == field)
        .unwrap();
    f["type"]["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn registry_schemas_evolution_and_output_registration() {
    let Some(b) = broker("registry") else { return };
    let s = Scenario::new(&b, "registry");
    s.create_input(1);
    let url = registry_url();

    let evolved_text = evolved_schema_text();
    let evolved_json: Value = serde_json::from_str(&evolved_text).unwrap();
    let evolved = Schema::parse_str(&evolved_text).unwrap();
    let subject = format!("{}-value", s.input);
    let original_id = register_schema(&url, &subject, TOUCHPOINT_SCHEMA);
    let evolved_id = register_schema(&url, &subject, &evolved_text);
    assert_ne!(original_id, evolved_id);
    let channels = symbols_of(&evolved_json, "channel");
    let types = symbols_of(&evolved_json, "type");
    let original = touchstream::codec::avro::touchpoint_schema().unwrap();

    // Input: alternate writer schemas; some records use the new symbols.
    let lines = generate(&["--seed", "71", "--customers", "20", "--days", "12"]);
    let mut records = Vec::new();
    let mut replay_lines = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let tp = touchpoint_of(l);
        let key = Some(tp.customer_id.clone().into_bytes());
        if i % 2 == 0 {
            let datum = apache_avro::to_avro_datum(&original, touchpoint_value(&tp)).unwrap();
            records.push(In {
                key,
                value: Some(frame(original_id, &datum)),
                partition: 0,
            });
            replay_lines.push(l.clone());
            continue;
        }
        let mut j: Value = serde_json::from_str(l).unwrap();
        let Avro::Record(mut fields) = touchpoint_value(&tp) else {
            unreachable!()
        };
        for (name, v) in fields.iter_mut() {
            let (symbol, list) = match name.as_str() {
                "channel" if i % 10 == 1 => (NEW_CHANNEL.to_string(), &channels),
                "type" if i % 14 == 3 && tp.kind.as_str() == "page_view" => {
                    (NEW_TYPE.to_string(), &types)
                }
                "channel" => (tp.channel.as_str().to_string(), &channels),
                "type" => (tp.kind.as_str().to_string(), &types),
                _ => continue,
            };
            j[name.as_str()] = json!(symbol);
            *v = Avro::Enum(
                list.iter().position(|x| *x == symbol).unwrap() as u32,
                symbol,
            );
        }
        fields.push((
            "loyalty_tier".into(),
            Avro::Union(1, Box::new(Avro::String("gold".into()))),
        ));
        let datum = apache_avro::to_avro_datum(&evolved, Avro::Record(fields)).unwrap();
        records.push(In {
            key,
            value: Some(frame(evolved_id, &datum)),
            partition: 0,
        });
        replay_lines.push(j.to_string()); // unknown JSON symbols → other, like Avro
    }
    // An id the registry does not know → DLQ unknown_schema.
    let unknown = frame(
        UNKNOWN_ID,
        &apache_avro::to_avro_datum(&original, touchpoint_value(&touchpoint_of(&lines[0])))
            .unwrap(),
    );
    records.insert(
        records.len() / 2,
        In {
            key: Some(b"cust-unknown".to_vec()),
            value: Some(unknown.clone()),
            partition: 0,
        },
    );
    produce(&b, &s.input, &records);

    let mut cfg = s.config();
    cfg.input_format = "avro".into();
    cfg.registry = Some(url.clone());
    let cfg = s.write_config("svc", &cfg);
    let expected = replay(&replay_lines, &cfg);
    assert!(expected.rejected.is_empty(), "{}", expected.stderr);
    assert!(
        replay_lines.iter().any(|l| l.contains(NEW_CHANNEL))
            && replay_lines.iter().any(|l| l.contains(NEW_TYPE))
    );

    let mut svc = s.start(&cfg, "reg");
    svc.wait_ready(Duration::from_secs(60));
    let mut out = s.outputs(true);
    out.settle(
        expected.events.len(),
        Duration::from_secs(60),
        Duration::from_secs(10),
    );
    out.poll_for(Duration::from_secs(2));

    // Output schemas registered under <topic>-value (one version each);
    // frames carry those ids; the values decode with the schema the
    // registry holds (Apicurio gives it back re-serialized: same schema).
    let mut texts = Vec::new();
    for t in DerivedType::ALL {
        let subj = format!("{}-value", s.output_topic(t));
        let (versions, id, text) = subject_of(&url, &subj);
        assert_eq!(versions.len(), 1, "{subj}: {versions:?}");
        let ours =
            Schema::parse_str(touchstream::codec::avro::DERIVED_SCHEMAS[t as usize].1).unwrap();
        assert_eq!(
            Schema::parse_str(&text).unwrap().canonical_form(),
            ours.canonical_form(),
            "{subj} holds the schema of schemas/{}.avsc",
            t.as_str()
        );
        texts.push((id, t, text));
    }
    let outs = decode_outputs(&out.records, &s.prefix, &OutputSchemas::from_texts(&texts));
    for o in &outs {
        let want = texts.iter().find(|(_, t, _)| *t == o.kind).unwrap().0;
        assert_eq!(o.schema_id, want, "frame id of a {} output", o.kind);
    }
    check_outputs(&outs, &expected.events, &s.prefix, Copies::Forbidden);
    check_order_per_partition(&outs, &expected.events);

    // A third-party consumer resolves the output schemas through the
    // registry by the ids in the frames.
    if let Some(py) = python() {
        let printed = consume_py(&py, &b, &s.prefix, &["--registry", &url]);
        check_printed(&printed, &expected.events);
        // ... and with confluent-kafka's own AvroDeserializer, as a
        // downstream service would, every output topic through the registry.
        let printed = consume_py(
            &py,
            &b,
            &s.prefix,
            &["--registry", &url, "--confluent-deserializer"],
        );
        check_printed(&printed, &expected.events);
        for t in DerivedType::ALL {
            if expected.events.iter().any(|e| e["type"] == t.as_str()) {
                assert!(
                    printed.iter().any(|e| e["type"] == t.as_str()),
                    "no {t} read through the registry"
                );
            }
        }
    }

    // The unknown id is dead-lettered.
    let mut dlq = Collector::new(&b, std::slice::from_ref(&s.dlq), true);
    assert!(dlq.wait_until(Duration::from_secs(20), |c| !c.records.is_empty()));
    dlq.poll_for(Duration::from_secs(1));
    assert_eq!(dlq.records.len(), 1);
    assert_eq!(
        dlq.records[0].header("error.reason").as_deref(),
        Some(RejectReason::UnknownSchema.as_str())
    );
    assert_eq!(dlq.records[0].value.as_deref(), Some(unknown.as_slice()));
    let (st, _) = svc.sigterm(Duration::from_secs(20));
    assert!(st.success());
}

/// An output schema the registry refuses (BACKWARD: the subject holds a
/// schema touchstream's cannot read) keeps the service alive and not
/// ready, saying which subject and why, with the registry's own words.
#[test]
#[ignore = "needs a Kafka broker and a schema registry: scripts/test starts both and runs it"]
fn an_incompatible_output_schema_is_refused_clearly_and_the_service_stays_not_ready() {
    let Some(b) = broker("registry-incompatible") else {
        return;
    };
    let s = Scenario::new(&b, "registry-incompatible");
    s.create_input(1);
    let url = registry_url();
    // engagement_score's subject already holds a schema whose `score` is a
    // string: a reader with a double `score` cannot read its data.
    let subj = format!("{}-value", s.output_topic(DerivedType::EngagementScore));
    let older = json!({
        "type": "record", "name": "EngagementScore", "namespace": "io.touchstream",
        "fields": [{"name": "score", "type": "string"}]
    });
    register_schema(&url, &subj, &older.to_string());
    let mut cfg = s.config();
    cfg.input_format = "avro".into();
    cfg.registry = Some(url.clone());
    let cfg = s.write_config("svc", &cfg);
    let mut svc = s.start(&cfg, "incompatible");
    svc.wait_log("409", Duration::from_secs(60));
    let log = svc.log_text();
    assert!(
        log.contains(&subj),
        "names the subject: {}",
        svc.log_tail(20)
    );
    assert!(
        log.to_lowercase().contains("incompatible"),
        "says why: {}",
        svc.log_tail(20)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(svc.exited().is_none(), "no crash: {}", svc.log_tail(20));
    assert_ne!(svc.status("/readyz"), Some(200));
    assert_eq!(svc.status("/healthz"), Some(200), "alive");
    let (st, took) = svc.sigterm(Duration::from_secs(20));
    assert!(
        st.success() && took < Duration::from_secs(10),
        "{st:?} in {took:?}"
    );
}

/// The registry unreachable at start, then mid-run: the service stays up
/// and not ready, shows the stall in `touchstream_partitions_waiting_on_registry`,
/// stops promptly on SIGTERM while waiting, and after a restart with the
/// registry back nothing is lost: the outputs equal replay.
#[test]
#[ignore = "needs a Kafka broker and a schema registry: scripts/test starts both and runs it"]
fn a_registry_outage_loses_nothing_and_delays_no_sigterm() {
    let Some(b) = broker("registry-outage") else {
        return;
    };
    let s = Scenario::new(&b, "registry-outage");
    s.create_input(1);
    let url = registry_url();
    let relay = Relay::new(&url);
    let subject = format!("{}-value", s.input);
    let original = touchstream::codec::avro::touchpoint_schema().unwrap();
    let first_id = register_schema(&url, &subject, TOUCHPOINT_SCHEMA);
    // A second writer schema (an added optional field), registered now but
    // first seen by the service during the outage: it must look it up.
    let mut evolved: Value = serde_json::from_str(TOUCHPOINT_SCHEMA).unwrap();
    evolved["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "note", "type": ["null", "string"], "default": null }));
    let second_id = register_schema(&url, &subject, &evolved.to_string());
    let second = Schema::parse_str(&evolved.to_string()).unwrap();

    let lines = generate(&["--seed", "73", "--customers", "15", "--days", "6"]);
    let half = lines.len() / 2;
    let framed = |l: &String, schema: &Schema, id: u32| {
        let tp = touchpoint_of(l);
        let Avro::Record(mut fields) = touchpoint_value(&tp) else {
            unreachable!()
        };
        if id == second_id {
            fields.push(("note".into(), Avro::Union(0, Box::new(Avro::Null))));
        }
        let datum = apache_avro::to_avro_datum(schema, Avro::Record(fields)).unwrap();
        In {
            key: Some(tp.customer_id.into_bytes()),
            value: Some(frame(id, &datum)),
            partition: 0,
        }
    };
    let first: Vec<In> = lines[..half]
        .iter()
        .map(|l| framed(l, &original, first_id))
        .collect();
    let rest: Vec<In> = lines[half..]
        .iter()
        .map(|l| framed(l, &second, second_id))
        .collect();

    let mut cfg = s.config();
    cfg.input_format = "avro".into();
    cfg.registry = Some(relay.url.clone());
    let cfg = s.write_config("svc", &cfg);
    let expected = replay(&lines, &cfg);

    // Down at start: alive, not ready, saying so; back: ready.
    relay.cut(true);
    let mut svc = s.start(&cfg, "outage");
    svc.wait_log("Cannot start", Duration::from_secs(60));
    assert!(svc.exited().is_none(), "{}", svc.log_tail(20));
    assert_ne!(svc.status("/readyz"), Some(200));
    relay.cut(false);
    svc.wait_ready(Duration::from_secs(90));

    // Down mid-run, with a writer id the service has not seen yet.
    produce(&b, &s.input, &first);
    let mut out = s.outputs(true);
    assert!(out.wait_until(Duration::from_secs(60), |c| !c.records.is_empty()));
    relay.cut(true);
    produce(&b, &s.input, &rest);
    let deadline = Instant::now() + Duration::from_secs(60);
    while svc.metric("touchstream_partitions_waiting_on_registry") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no stall shown: {}",
            svc.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(svc.status("/readyz"), Some(200), "not ready while waiting");
    assert_eq!(svc.status("/healthz"), Some(200), "alive while waiting");
    let (st, took) = svc.sigterm(Duration::from_secs(30));
    assert!(st.success(), "{st:?}: {}", svc.log_tail(20));
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");

    // Back: a restarted service processes the rest; nothing lost.
    relay.cut(false);
    let mut svc = s.start(&cfg, "outage-2");
    svc.wait_ready(Duration::from_secs(90));
    out.settle(
        expected.events.len(),
        Duration::from_secs(90),
        Duration::from_secs(10),
    );
    let outs = decode_outputs(&out.records, &s.prefix, &registry_schemas(&url, &s));
    check_outputs(&outs, &expected.events, &s.prefix, Copies::ByteIdentical);
    let (st, _) = svc.sigterm(Duration::from_secs(20));
    assert!(st.success());
}

/// The output schemas as the registry holds them for a scenario.
fn registry_schemas(url: &str, s: &Scenario) -> OutputSchemas {
    let texts: Vec<(u32, DerivedType, String)> = DerivedType::ALL
        .iter()
        .map(|t| {
            let (_, id, text) = subject_of(url, &format!("{}-value", s.output_topic(*t)));
            (id, *t, text)
        })
        .collect();
    OutputSchemas::from_texts(&texts)
}
