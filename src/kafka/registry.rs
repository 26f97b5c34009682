//! A Confluent-compatible schema registry client (the documented REST API:
//! `GET /schemas/ids/{id}`, `POST /subjects/{subject}/versions`), with a
//! cache, and the input decoder that resolves writer schemas through it —
//! or, without a registry, through ids configured for the shipped schemas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use thiserror::Error;

use crate::codec::avro::{self, DerivedSchemas, SchemaError, DERIVED_SCHEMAS, TOUCHPOINT_SCHEMA};
use crate::config::{Config, InputFormat};
use crate::model::DerivedType;
use crate::validate::{RawTouchpoint, RejectReason, Rejection};

/// Registry failures that are not "no such schema".
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The registry could not be reached or answered an error.
    #[error("schema registry {url}: {message}")]
    Transport {
        /// The URL requested.
        url: String,
        /// What happened.
        message: String,
    },
    /// The registry returned a schema that does not parse.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// A registry client with a schema cache.
pub struct Registry {
    /// The URL without credentials: the only form that is ever shown.
    base: String,
    /// `Basic ...` when credentials are configured.
    auth: Option<String>,
    agent: ureq::Agent,
    cache: HashMap<u32, Arc<Schema>>,
    /// Ids the registry did not know, and when that was last asked.
    unknown: HashMap<u32, Instant>,
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// The registry's error code for "schema not found" (a 404 with any other
/// body is a wrong URL or a proxy, not an unknown schema).
const SCHEMA_NOT_FOUND: i64 = 40403;
/// Lookups of an id the registry does not know (yet) before a record is
/// rejected for it: a schema registered a moment after its first record,
/// or a registry replica behind, still resolves.
const UNKNOWN_RETRIES: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(750),
    Duration::from_millis(2000),
];
/// How long an id that stayed unknown through the retries is taken as
/// unknown without asking again (a burst of records with a bad id costs
/// one round of retries, not one per record).
const UNKNOWN_FOR: Duration = Duration::from_secs(10);

/// The URL without `user:pass@`, and the credentials it held.
fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let clean = format!("{scheme}://{host}{}", &rest[host_end..]);
            (clean, Some((user.to_string(), pass.to_string())))
        }
        None => (url.to_string(), None),
    }
}

impl Registry {
    /// A client for `url` (e.g. `http://registry:8081`, or Apicurio's
    /// `http://registry:8080/apis/ccompat/v7`), with basic-auth credentials
    /// from the arguments or, failing those, from the URL's user info.
    pub fn new(url: &str, username: Option<&str>, password: Option<&str>) -> Self {
        use base64::Engine as _;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let (clean, in_url) = split_credentials(url.trim_end_matches('/'));
        let creds = match username {
            Some(u) => Some((u.to_string(), password.unwrap_or_default().to_string())),
            None => in_url,
        };
        let auth = creds.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        Registry {
            base: clean,
            auth,
            agent,
            cache: HashMap::new(),
            unknown: HashMap::new(),
        }
    }

    /// The registry's URL as shown in logs and errors (no credentials).
    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let r = self.agent.request(method, url).set("Accept", CONTENT_TYPE);
        match &self.auth {
            Some(a) => r.set("Authorization", a),
            None => r,
        }
    }

    /// The writer schema with this id; `None` when the registry does not
    /// know it after [`UNKNOWN_RETRIES`] lookups. Found schemas are cached
    /// for good (ids are immutable); an unknown id is asked again once
    /// [`UNKNOWN_FOR`] has passed.
    pub fn schema_by_id(&mut self, id: u32) -> Result<Option<Arc<Schema>>, RegistryError> {
        if let Some(s) = self.cache.get(&id) {
            return Ok(Some(s.clone()));
        }
        if self
            .unknown
            .get(&id)
            .is_some_and(|t| t.elapsed() < UNKNOWN_FOR)
        {
            return Ok(None);
        }
        let mut waits = UNKNOWN_RETRIES.iter();
        loop {
            if let Some(s) = self.fetch(id)? {
                self.unknown.remove(&id);
                self.cache.insert(id, s.clone());
                return Ok(Some(s));
            }
            match waits.next() {
                Some(w) => std::thread::sleep(*w),
                None => {
                    self.unknown.insert(id, Instant::now());
                    return Ok(None);
                }
            }
        }
    }

    /// One lookup: `None` only for the registry's "schema not found".
    fn fetch(&self, id: u32) -> Result<Option<Arc<Schema>>, RegistryError> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let transport = |message: String| RegistryError::Transport {
            url: url.clone(),
            message,
        };
        match self.request("GET", &url).call() {
            Ok(resp) => {
                let body: serde_json::Value =
                    resp.into_json().map_err(|e| transport(e.to_string()))?;
                let text = body["schema"]
                    .as_str()
                    .ok_or_else(|| transport("response has no `schema`".into()))?;
                Ok(Some(Arc::new(avro::parse_schema(
                    &format!("registry id {id}"),
                    text,
                )?)))
            }
            Err(ureq::Error::Status(404, resp)) => {
                let body: serde_json::Value = resp.into_json().unwrap_or_default();
                if body["error_code"].as_i64() == Some(SCHEMA_NOT_FOUND) {
                    Ok(None)
                } else {
                    Err(transport(format!(
                        "404 without the registry's 'schema not found' code ({body}): is the URL right \
                         (Apicurio's Confluent API is under /apis/ccompat/v7)?"
                    )))
                }
            }
            Err(e) => Err(transport(describe(e))),
        }
    }

    /// Registers a schema under a subject; returns its id.
    pub fn register(&self, subject: &str, schema_text: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let transport = |message: String| RegistryError::Transport {
            url: url.clone(),
            message,
        };
        let body = serde_json::json!({ "schema": schema_text });
        let resp = self
            .request("POST", &url)
            .set("Content-Type", CONTENT_TYPE)
            .send_json(body)
            .map_err(|e| transport(describe(e)))?;
        let v: serde_json::Value = resp.into_json().map_err(|e| transport(e.to_string()))?;
        v["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| transport(format!("no id in response {v}")))
    }
}

/// A request failure in words, with the registry's own message for an
/// HTTP error (a 409 says which compatibility rule the schema breaks).
fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, resp) => {
            let body = resp.into_string().unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or(body);
            format!("HTTP {code}: {}", cut(&message, 500))
        }
        // The transport error's own text repeats the URL, which the
        // caller's error already names.
        ureq::Error::Transport(t) => match t.message() {
            Some(m) => format!("{}: {m}", t.kind()),
            None => t.kind().to_string(),
        },
    }
}

fn cut(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The configured registry client, if any.
fn registry_of(cfg: &Config) -> Option<Registry> {
    cfg.schema_registry.url.as_deref().map(|url| {
        Registry::new(
            url,
            cfg.schema_registry.username.as_deref(),
            cfg.schema_registry.password.as_deref(),
        )
    })
}

/// Default schema id of the shipped touchpoint schema without a registry.
pub const DEFAULT_TOUCHPOINT_ID: u32 = 1;
/// Without a registry, derived type `i` (SPEC table order) uses id `BASE + i`.
pub const DEFAULT_OUTPUT_ID_BASE: u32 = 101;

/// Decodes input values (JSON or Confluent-framed Avro).
pub struct InputDecoder {
    format: InputFormat,
    formats: std::collections::BTreeMap<String, InputFormat>,
    reader: Schema,
    reader_canonical: String,
    /// Per writer id: a fast reader when it equals the reader schema (no
    /// resolution needed), else None.
    same: HashMap<u32, Option<Arc<avro::DatumReader>>>,
    known: HashMap<u32, Arc<Schema>>,
    registry: Option<Registry>,
}

impl InputDecoder {
    /// A decoder for the configured format and schema source.
    pub fn new(cfg: &Config) -> Result<Self, SchemaError> {
        let reader = avro::touchpoint_schema()?;
        let mut known = HashMap::new();
        let registry = registry_of(cfg);
        if registry.is_none() || cfg.schema_registry.touchpoint_schema_id.is_some() {
            let id = cfg
                .schema_registry
                .touchpoint_schema_id
                .unwrap_or(DEFAULT_TOUCHPOINT_ID);
            known.insert(
                id,
                Arc::new(avro::parse_schema("touchpoint", TOUCHPOINT_SCHEMA)?),
            );
        }
        let reader_canonical = reader.canonical_form();
        Ok(InputDecoder {
            format: cfg.kafka.input_format,
            formats: cfg.kafka.input_formats.clone(),
            reader,
            reader_canonical,
            same: HashMap::new(),
            known,
            registry,
        })
    }

    /// Decodes records of `alias` (a repartition topic) as those of
    /// `topic`, whose bytes it carries.
    pub fn alias(&mut self, alias: &str, topic: &str) {
        let f = self.formats.get(topic).copied().unwrap_or(self.format);
        self.formats.insert(alias.to_string(), f);
    }

    /// Decodes one record value. `Err(Ok(rejection))` is bad data; the
    /// registry being unreachable is `Err(Err(..))` (retry, do not reject).
    pub fn decode(
        &mut self,
        topic: &str,
        value: Option<&[u8]>,
    ) -> Result<RawTouchpoint, Result<Rejection, RegistryError>> {
        let Some(bytes) = value else {
            return Err(Ok(Rejection::new(
                RejectReason::DecodeError,
                "record has no value (tombstone)",
            )));
        };
        match self.formats.get(topic).copied().unwrap_or(self.format) {
            InputFormat::Json => crate::codec::json::decode(bytes).map_err(Ok),
            InputFormat::Avro => {
                let (id, datum) = avro::unframe(bytes).map_err(Ok)?;
                let writer = match self.known.get(&id) {
                    Some(s) => s.clone(),
                    None => match self.registry.as_mut() {
                        Some(r) => match r.schema_by_id(id).map_err(Err)? {
                            Some(s) => s,
                            None => {
                                return Err(Ok(Rejection::new(
                                    RejectReason::UnknownSchema,
                                    format!("schema id {id} is not in the registry"),
                                )))
                            }
                        },
                        None => {
                            return Err(Ok(Rejection::new(
                                RejectReason::UnknownSchema,
                                format!("schema id {id} is not configured (no schema registry)"),
                            )))
                        }
                    },
                };
                let canonical = &self.reader_canonical;
                let fast = self
                    .same
                    .entry(id)
                    .or_insert_with(|| {
                        (writer.canonical_form() == *canonical)
                            .then(|| avro::DatumReader::new(&writer).ok().map(Arc::new))
                            .flatten()
                    })
                    .clone();
                match fast {
                    Some(r) => r.decode(datum).map_err(Ok),
                    None => avro::decode_datum(&writer, &self.reader, datum).map_err(Ok),
                }
            }
        }
    }
}

/// Encodes derived events as Confluent-framed Avro under known ids.
pub struct OutputEncoder {
    schemas: DerivedSchemas,
    ids: [u32; DERIVED_SCHEMAS.len()],
}

impl OutputEncoder {
    /// Registers the output schemas under `<topic>-value` when a registry
    /// is configured; otherwise uses the default ids.
    pub fn new(cfg: &Config) -> Result<Self, RegistryError> {
        let schemas = DerivedSchemas::load()?;
        let mut ids = [0u32; DERIVED_SCHEMAS.len()];
        let registry = registry_of(cfg);
        for (i, (t, text)) in DERIVED_SCHEMAS.iter().enumerate() {
            ids[i] = match &registry {
                Some(r) => r.register(&format!("{}-value", output_topic(cfg, *t)), text)?,
                None => DEFAULT_OUTPUT_ID_BASE + i as u32,
            };
        }
        Ok(OutputEncoder { schemas, ids })
    }

    /// The framed value of an event.
    pub fn encode(&self, ev: &crate::model::DerivedEvent) -> Result<Vec<u8>, SchemaError> {
        let mut out = Vec::with_capacity(160);
        self.encode_into(ev, &mut out)?;
        Ok(out)
    }

    /// [`OutputEncoder::encode`] into `out` (cleared first): the service
    /// reuses one buffer for every derived event.
    pub fn encode_into(
        &self,
        ev: &crate::model::DerivedEvent,
        out: &mut Vec<u8>,
    ) -> Result<(), SchemaError> {
        out.clear();
        avro::frame_header(self.ids[ev.kind as usize], out);
        self.schemas.encode_datum_into(ev, out)
    }

    /// The schema id used for a type.
    pub fn id(&self, t: DerivedType) -> u32 {
        self.ids[t as usize]
    }
}

/// The output topic of a derived type.
pub fn output_topic(cfg: &Config, t: DerivedType) -> String {
    format!("{}{}", cfg.kafka.output_topic_prefix, t.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A registry double that answers each request with the next canned
    /// (status, body): the one way to make a schema appear between two
    /// lookups on demand.
    fn double(replies: Vec<(u16, String)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, body) in replies {
                let (mut stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                seen.push(head);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(reply.as_bytes()).unwrap();
            }
            seen
        });
        (url, handle)
    }

    fn not_found() -> (u16, String) {
        (
            404,
            r#"{"error_code":40403,"message":"Schema 7 not found"}"#.into(),
        )
    }

    #[test]
    fn credentials_leave_the_url_for_a_header() {
        let (clean, creds) =
            split_credentials("https://alice:s3cret@reg.example:8081/apis/ccompat/v7");
        assert_eq!(clean, "https://reg.example:8081/apis/ccompat/v7");
        assert_eq!(creds, Some(("alice".into(), "s3cret".into())));
        assert_eq!(split_credentials("http://reg:8081").1, None);
        // The password never reaches an error.
        let mut r = Registry::new("http://alice:s3cret@127.0.0.1:1", None, None);
        let e = r.schema_by_id(7).unwrap_err().to_string();
        assert!(!e.contains("s3cret") && e.contains("127.0.0.1:1"), "{e}");
    }

    #[test]
    fn a_schema_registered_a_moment_after_its_first_record_resolves() {
        let schema = serde_json::json!({ "schema": TOUCHPOINT_SCHEMA }).to_string();
        let (url, server) = double(vec![not_found(), not_found(), (200, schema)]);
        let mut r = Registry::new(&url, Some("bob"), Some("pw"));
        assert!(r.schema_by_id(7).unwrap().is_some());
        let heads = server.join().unwrap();
        assert_eq!(heads.len(), 3, "looked up again with backoff");
        assert!(
            heads[0].contains("Authorization: Basic Ym9iOnB3"),
            "{}",
            heads[0]
        );
        // Cached for good once found: no fourth request (the double is gone).
        assert!(r.schema_by_id(7).unwrap().is_some());
    }

    #[test]
    fn an_unknown_id_is_unknown_after_the_retries_and_a_bare_404_is_an_error() {
        let (url, server) = double(vec![not_found(); 4]);
        let mut r = Registry::new(&url, None, None);
        assert!(r.schema_by_id(7).unwrap().is_none());
        assert_eq!(server.join().unwrap().len(), 4);
        // Within UNKNOWN_FOR the answer stands without asking again.
        assert!(r.schema_by_id(7).unwrap().is_none());
        // A 404 that is not the registry's "not found" (a wrong path) is not
        // a reason to reject records: it is an error to retry.
        let (url, server) = double(vec![(404, "<html>nope</html>".into())]);
        let mut r = Registry::new(&url, None, None);
        let e = r.schema_by_id(7).unwrap_err().to_string();
        assert!(e.contains("/apis/ccompat/v7"), "{e}");
        server.join().unwrap();
    }
}
