//! Schema registry: a small Confluent-compatible registry runs inside the
//! test (Confluent's documented REST API: `GET /schemas/ids/{id}`,
//! `POST /subjects/{subject}/versions`). No Confluent, Karapace or
//! Apicurio server can be installed here.
//!
//! Input is framed with registry ids, partly with an *evolved* writer
//! schema (an extra optional field with a default, and new `Channel` and
//! `TouchpointType` symbols, inserted before `other` so that symbol indexes
//! shift); the service must resolve it against the shipped reader schema
//! (unknown symbols → `other`) and emit exactly what replay emits. The
//! output schemas must be registered under `<topic>-value` and the output
//! frames must carry the ids the registry returned.

mod kafka_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use kafka_support::*;
use serde_json::{json, Value};
use touchstream::codec::avro::{frame, touchpoint_value, TOUCHPOINT_SCHEMA};
use touchstream::model::DerivedType;
use touchstream::validate::RejectReason;

const CT: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Default)]
struct Registry {
    next_id: u32,
    /// id → schema text.
    schemas: BTreeMap<u32, String>,
    /// subject → ids (versions).
    subjects: BTreeMap<String, Vec<u32>>,
    /// ids looked up with GET /schemas/ids/{id}, in order.
    lookups: Vec<u32>,
}

type Shared = Arc<Mutex<Registry>>;

fn reply(code: StatusCode, body: Value) -> axum::response::Response {
    (code, [(header::CONTENT_TYPE, CT)], body.to_string()).into_response()
}

async fn get_schema(State(r): State<Shared>, Path(id): Path<u32>) -> axum::response::Response {
    let mut r = r.lock().unwrap();
    r.lookups.push(id);
    match r.schemas.get(&id) {
        Some(text) => reply(StatusCode::OK, json!({ "schema": text })),
        None => reply(
            StatusCode::NOT_FOUND,
            json!({ "error_code": 40403, "message": "Schema not found" }),
        ),
    }
}

async fn register(
    State(r): State<Shared>,
    Path(subject): Path<String>,
    body: String,
) -> axum::response::Response {
    let text = match serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["schema"].as_str().map(str::to_string))
    {
        Some(t) => t,
        None => {
            return reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error_code": 42201, "message": "Invalid schema" }),
            )
        }
    };
    if Schema::parse_str(&text).is_err() {
        return reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error_code": 42201, "message": "Invalid schema" }),
        );
    }
    let mut r = r.lock().unwrap();
    // Like Confluent: the same schema gets the same id everywhere.
    let id = match r.schemas.iter().find(|(_, t)| **t == text) {
        Some((id, _)) => *id,
        None => {
            let id = r.next_id;
            r.next_id += 1;
            r.schemas.insert(id, text);
            id
        }
    };
    let versions = r.subjects.entry(subject).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    reply(StatusCode::OK, json!({ "id": id }))
}

/// Starts the registry on a free port; ids start at `first_id`.
fn start_registry(first_id: u32) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Registry {
        next_id: first_id,
        ..Default::default()
    }));
    let app = Router::new()
        .route("/schemas/ids/{id}", get(get_schema))
        .route("/subjects/{subject}/versions", post(register))
        .with_state(shared.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    (url, shared)
}

/// Registers a schema through the REST API (as a producer would).
fn register_schema(url: &str, subject: &str, text: &str) -> u32 {
    let resp = ureq::post(&format!("{url}/subjects/{subject}/versions"))
        .set("Content-Type", CT)
        .send_string(&json!({ "schema": text }).to_string())
        .expect("register");
    let v: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    v["id"].as_u64().unwrap() as u32
}

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
fn registry_schemas_evolution_and_output_registration() {
    let Some(b) = broker("registry") else { return };
    let s = Scenario::new(&b, "registry");
    s.create_input(1);
    let (url, reg) = start_registry(1000);

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
        4242,
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

    // Output schemas registered under <topic>-value; frames carry those ids;
    // the values decode with the schema text the registry holds.
    let (texts, lookups) = {
        let r = reg.lock().unwrap();
        let mut texts = Vec::new();
        for t in DerivedType::ALL {
            let subj = format!("{}-value", s.output_topic(t));
            let ids = r.subjects.get(&subj).unwrap_or_else(|| {
                panic!("subject {subj} not registered: {:?}", r.subjects.keys())
            });
            assert_eq!(ids.len(), 1, "{subj}: {ids:?}");
            texts.push((ids[0], t, r.schemas[&ids[0]].clone()));
        }
        (texts, r.lookups.clone())
    };
    let outs = decode_outputs(&out.records, &s.prefix, &OutputSchemas::from_texts(&texts));
    for o in &outs {
        let want = texts.iter().find(|(_, t, _)| *t == o.kind).unwrap().0;
        assert_eq!(o.schema_id, want, "frame id of a {} output", o.kind);
    }
    check_outputs(&outs, &expected.events, &s.prefix, Copies::Forbidden);
    check_order_per_partition(&outs, &expected.events);

    // Writer schemas were fetched by id, once each (cached).
    for id in [original_id, evolved_id, 4242] {
        assert_eq!(
            lookups.iter().filter(|x| **x == id).count(),
            1,
            "GET /schemas/ids/{id}: lookups {lookups:?}"
        );
    }

    // A third-party consumer resolves the output schemas through the
    // registry by the ids in the frames.
    if let Some(py) = python() {
        let printed = consume_py(&py, &b, &s.prefix, &["--registry", &url]);
        check_printed(&printed, &expected.events);
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
