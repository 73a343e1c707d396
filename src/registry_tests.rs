//! Tests of the schema registry over real sockets, including the real client crate.
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Talks HTTP/1.1 over a real socket, so routing, content types and framing are
/// exercised as a client sees them.
struct Client(SocketAddr);

impl Client {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = tokio::net::TcpStream::connect(self.0).await.expect("connect");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {CONTENT_TYPE}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.0,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.expect("receive");
        let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
        let content_type = format!("content-type: {CONTENT_TYPE}");
        assert!(head.to_ascii_lowercase().contains(&content_type), "{head}");
        let status = head.get(9..12).and_then(|s| s.parse().ok()).expect("status");
        (status, serde_json::from_str(body).expect("JSON body"))
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }
    /// Posts `{"schema": schema}`, the body of register, lookup and compatibility.
    async fn post(&self, path: &str, schema: &str) -> (u16, Value) {
        self.call("POST", path, Some(json!({ "schema": schema }))).await
    }
    async fn put_level(&self, path: &str, level: &str) -> (u16, Value) {
        self.call("PUT", path, Some(json!({ "compatibility": level }))).await
    }
}

/// Status and `error_code` of an error response.
fn code((status, body): (u16, Value)) -> (u16, u64) {
    (status, body["error_code"].as_u64().unwrap_or_default())
}

fn record(extra_fields: &str) -> String {
    let id = r#"{"name":"id","type":"long"}"#;
    format!(r#"{{"type":"record","name":"Order","namespace":"shop","fields":[{id}{extra_fields}]}}"#)
}

async fn start(data: Option<PathBuf>) -> (Client, tokio::task::JoinHandle<()>) {
    let (addr, server) = spawn(data).await.expect("spawn registry");
    (Client(addr), server)
}

#[tokio::test]
async fn register_lookup_and_read_back() {
    let (c, server) = start(None).await;
    let (v1, path) = (record(""), "/subjects/orders-value/versions");
    let body = json!({"schema": v1, "schemaType": "AVRO", "references": []});
    assert_eq!(c.call("POST", path, Some(body)).await, (200, json!({"id": 1})));
    // Formatting and key order do not make a new schema.
    let same = r#"{ "namespace": "shop", "name": "Order", "type": "record",
                    "fields": [ {"type": "long", "name": "id"} ] }"#;
    assert_eq!(c.post(path, same).await, (200, json!({"id": 1})));

    assert_eq!(c.get("/schemas/ids/1").await, (200, json!({ "schema": v1 })));
    assert_eq!(code(c.get("/schemas/ids/7").await), (404, 40403));
    assert_eq!(c.get("/subjects").await.1, json!(["orders-value"]));
    assert_eq!(c.get(path).await.1, json!([1]));
    let expected = json!({"subject": "orders-value", "version": 1, "id": 1, "schema": v1});
    for v in ["1", "latest", "-1"] {
        assert_eq!(c.get(&format!("{path}/{v}")).await, (200, expected.clone()), "{v}");
    }
    assert_eq!(code(c.get(&format!("{path}/2")).await), (404, 40402));
    assert_eq!(code(c.get("/subjects/nope/versions").await), (404, 40401));

    let subject = "/subjects/orders-value";
    assert_eq!(c.post(subject, same).await, (200, expected));
    assert_eq!(code(c.post(subject, r#""string""#).await), (404, 40403));
    assert_eq!(code(c.post("/subjects/nope", &v1).await), (404, 40401));
    assert_eq!(code(c.post(path, r#"{"type":"recrd"}"#).await), (422, 42201));

    assert_eq!(c.call("DELETE", subject, None).await, (200, json!([1])));
    assert_eq!(c.get("/subjects").await.1, json!([]));
    // Messages already written with a deleted version must stay decodable.
    assert_eq!(c.get("/schemas/ids/1").await.0, 200);
    server.abort();
}

#[tokio::test]
async fn ids_are_global_and_reused_across_subjects() {
    let (c, server) = start(None).await;
    assert_eq!(c.post("/subjects/a/versions", &record("")).await.1, json!({"id": 1}));
    assert_eq!(c.post("/subjects/b/versions", &record("")).await.1, json!({"id": 1}));
    assert_eq!(c.post("/subjects/c/versions", r#""string""#).await.1, json!({"id": 2}));
    // Avro's Parsing Canonical Form would merge these two; evolution cares about defaults.
    let default_1 = record(r#",{"name":"n","type":"int","default":1}"#);
    let default_2 = record(r#",{"name":"n","type":"int","default":2}"#);
    assert_eq!(c.post("/subjects/d/versions", &default_1).await.1, json!({"id": 3}));
    assert_eq!(c.post("/subjects/d/versions", &default_2).await.1, json!({"id": 4}));
    let uses = json!([{"subject": "a", "version": 1}, {"subject": "b", "version": 1}]);
    assert_eq!(c.get("/schemas/ids/1/versions").await.1, uses);
    server.abort();
}

#[tokio::test]
async fn backward_compatibility_is_enforced() {
    let (c, server) = start(None).await;
    let (path, check) = ("/subjects/s/versions", "/compatibility/subjects/s/versions/latest");
    assert_eq!(c.post(path, &record("")).await.1, json!({"id": 1}));

    let no_default = record(r#",{"name":"note","type":"string"}"#);
    assert_eq!(c.post(check, &no_default).await, (200, json!({"is_compatible": false})));
    assert_eq!(code(c.post(path, &no_default).await), (409, 409));

    let nullable = record(r#",{"name":"note","type":["null","string"],"default":null}"#);
    assert_eq!(c.post(check, &nullable).await.1, json!({"is_compatible": true}));
    assert_eq!(c.post(path, &nullable).await.1, json!({"id": 2}));
    assert_eq!(c.get(path).await.1, json!([1, 2]));

    let level = |l: &str| json!({ "compatibilityLevel": l });
    assert_eq!(c.get("/config").await.1, level("BACKWARD"));
    assert_eq!(code(c.get("/config/s").await), (404, 40408));
    assert_eq!(c.get("/config/s?defaultToGlobal=true").await.1, level("BACKWARD"));
    assert_eq!(c.put_level("/config/s", "NONE").await.1["compatibility"], "NONE");
    assert_eq!(c.post(path, &no_default).await.1, json!({"id": 3}));
    assert_eq!(code(c.put_level("/config", "SOMETIMES").await), (422, 42203));
    server.abort();
}

#[tokio::test]
async fn state_survives_a_restart() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("cormorant-registry-{nanos}"));
    let file = dir.join("registry.json");

    let (c, server) = start(Some(file.clone())).await;
    assert_eq!(c.post("/subjects/a/versions", &record("")).await.1["id"], 1);
    assert_eq!(c.post("/subjects/b/versions", r#""string""#).await.1["id"], 2);
    assert_eq!(c.put_level("/config", "FULL").await.0, 200);
    assert_eq!(c.put_level("/config/a", "NONE").await.0, 200);
    assert_eq!(c.call("DELETE", "/subjects/b", None).await.1, json!([1]));
    server.abort();

    let (c, server) = start(Some(file)).await;
    assert_eq!(c.get("/subjects").await.1, json!(["a"]));
    assert_eq!(c.get("/schemas/ids/2").await.1["schema"], r#""string""#);
    assert_eq!(c.get("/config").await.1, json!({"compatibilityLevel": "FULL"}));
    assert_eq!(c.get("/config/a").await.1, json!({"compatibilityLevel": "NONE"}));
    assert_eq!(c.post("/subjects/a/versions", &record("")).await.1["id"], 1);
    // Neither ids nor a deleted subject's version numbers are handed out again.
    assert_eq!(c.post("/subjects/b/versions", r#""int""#).await.1["id"], 3);
    assert_eq!(c.get("/subjects/b/versions").await.1, json!([2]));
    server.abort();
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn works_with_schema_registry_converter() {
    use apache_avro::types::Value as Avro;
    use schema_registry_converter::async_impl::easy_avro::{EasyAvroDecoder, EasyAvroEncoder};
    use schema_registry_converter::async_impl::schema_registry as sr;
    use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};

    let (c, server) = start(None).await;
    let url = format!("http://{}", c.0);
    let settings = || sr::SrSettings::new_builder(url.clone()).no_proxy().build();
    let settings = || settings().expect("SrSettings");
    let v1 = record("");
    let supplied = SuppliedSchema::new(Some("shop.Order".into()), SchemaType::Avro, v1.clone());
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema("orders".into(), false, supplied);
    let encoder = EasyAvroEncoder::new(settings());
    let bytes = encoder.encode(vec![("id", Avro::Long(7))], strategy).await;
    let bytes = bytes.expect("encode registers the schema");
    assert_eq!(bytes.get(..5), Some(&[0u8, 0, 0, 0, 1][..]));

    let fetched = sr::get_schema_by_id(1, &settings()).await.expect("get_schema_by_id");
    assert_eq!((fetched.schema, fetched.schema_type), (v1, SchemaType::Avro));
    let sr_settings = settings();
    let latest = sr::get_schema_by_subject_and_version(&sr_settings, "orders-value", None);
    let latest = latest.await.expect("latest version");
    assert_eq!((latest.id, latest.version), (1, Some(1)));
    let decoded = EasyAvroDecoder::new(settings()).decode(Some(&bytes)).await;
    let decoded = decoded.expect("decode");
    assert_eq!(decoded.value, Avro::Record(vec![("id".into(), Avro::Long(7))]));
    server.abort();
}
