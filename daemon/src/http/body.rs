//! Request bodies: read under the configured size limit, then parsed as JSON or YAML
//! with the position of any syntax error. Resource endpoints take either format, as
//! `kubectl` users expect; the small control endpoints take JSON.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::errors::ApiError;
use super::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
}

fn media_type(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .unwrap_or("invalid")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|m| !m.is_empty())
}

fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

fn is_yaml(media: &str) -> bool {
    matches!(
        media,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
    )
}

/// Reads the whole body, refusing it with 413 as soon as it passes `limit`.
pub async fn read_limited(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    if let Some(length) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if length > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("reading the request body failed: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

pub fn body_limit(req: &HttpRequest) -> usize {
    req.app_data::<web::Data<AppState>>()
        .map(|s| s.config.max_body_bytes)
        .unwrap_or(64 * 1024 * 1024)
}

pub fn json_error(e: &serde_json::Error) -> ApiError {
    ApiError::MalformedBody {
        format: "JSON",
        detail: e.to_string(),
        line: Some(e.line()),
        column: Some(e.column()),
    }
}

pub fn yaml_error(e: &serde_yaml_ng::Error) -> ApiError {
    let location = e.location();
    ApiError::MalformedBody {
        format: "YAML",
        detail: e.to_string(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
    }
}

/// Parses every YAML document in `bytes` (JSON is YAML too). Empty documents, such as a
/// file of comments, are left out.
pub fn parse_yaml_documents(bytes: &[u8]) -> Result<Vec<Value>, ApiError> {
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_slice(bytes) {
        let value = <YamlJson as serde::Deserialize>::deserialize(document)
            .map_err(|e| yaml_error(&e))?
            .0;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// A JSON value read from YAML. Unlike `serde_json::Value`'s own visitor it takes what
/// YAML has and JSON does not hold exactly: integers beyond 64 bits become doubles (as
/// JSON numbers are), tags are dropped for their value, and `<<` merge keys are applied.
struct YamlJson(Value);

impl<'de> serde::Deserialize<'de> for YamlJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(YamlJsonVisitor).map(YamlJson)
    }
}

struct YamlJsonVisitor;

fn double(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

impl<'de> serde::de::Visitor<'de> for YamlJsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v)
            .map(Value::from)
            .unwrap_or_else(|_| double(v as f64)))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(u64::try_from(v)
            .map(Value::from)
            .unwrap_or_else(|_| double(v as f64)))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        // `.nan` and `.inf` have no JSON form; read as null they would quietly drop
        // the field they were given for.
        if !v.is_finite() {
            return Err(E::custom(format!(
                "{v} is not a finite number, and every Hearth field takes a finite one"
            )));
        }
        Ok(double(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(YamlJsonVisitor)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(YamlJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        let mut merged = Vec::new();
        while let Some(YamlJson(key)) = map.next_key()? {
            let YamlJson(value) = map.next_value()?;
            let key = match key {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_string(),
                Value::Array(_) | Value::Object(_) => {
                    return Err(serde::de::Error::custom(
                        "a mapping key is a list or a mapping; JSON keys are strings",
                    ))
                }
            };
            if key == "<<" {
                merged.push(value);
            } else {
                object.insert(key, value);
            }
        }
        // Merge keys fill in only what the mapping does not set itself.
        for source in merged {
            let sources = match source {
                Value::Array(items) => items,
                other => vec![other],
            };
            for source in sources {
                if let Value::Object(entries) = source {
                    for (k, v) in entries {
                        object.entry(k).or_insert(v);
                    }
                }
            }
        }
        Ok(Value::Object(object))
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        // A tagged value (`!Tag value`): keep the value.
        use serde::de::VariantAccess;
        let (_tag, variant): (YamlJson, _) = data.variant()?;
        variant.newtype_variant::<YamlJson>().map(|v| v.0)
    }
}

/// A resource document sent as JSON or YAML (several YAML documents allowed; the
/// endpoint decides what it accepts).
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
)]
pub struct Document {
    pub format: BodyFormat,
    pub documents: Vec<Value>,
}

#[allow(
    dead_code,
    reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
)]
impl Document {
    /// The one document of the body; several, or none, is a 400.
    pub fn single(self) -> Result<Value, ApiError> {
        let mut docs = self.documents;
        match docs.len() {
            0 => Err(ApiError::BadRequest("the request body holds no document".into())),
            1 => Ok(docs.remove(0)),
            n => Err(ApiError::BadRequest(format!(
                "the request body holds {n} YAML documents; send one per request"
            ))),
        }
    }
}

impl FromRequest for Document {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let format = match media_type(&req).as_deref() {
                Some(m) if is_json(m) => BodyFormat::Json,
                Some(m) if is_yaml(m) => BodyFormat::Yaml,
                // curl --data-binary @file.yaml sends this; sniffing YAML is safe because
                // JSON is a subset of it.
                None
                | Some("application/x-www-form-urlencoded")
                | Some("text/plain")
                | Some("application/octet-stream") => BodyFormat::Yaml,
                Some(other) => {
                    return Err(ApiError::UnsupportedMediaType {
                        got: other.to_string(),
                        expected: "application/json or application/yaml",
                    })
                }
            };
            let bytes = read_limited(&req, &mut payload, body_limit(&req)).await?;
            let documents = match format {
                BodyFormat::Json => {
                    let value: Value = serde_json::from_slice(&bytes).map_err(|e| json_error(&e))?;
                    vec![value]
                }
                BodyFormat::Yaml => parse_yaml_documents(&bytes)?,
            };
            Ok(Document { format, documents })
        })
    }
}

/// A JSON body of a typed request; unknown fields are refused where the type says so.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            match media_type(&req).as_deref() {
                Some(m) if is_json(m) => {}
                None => {}
                Some(other) => {
                    return Err(ApiError::UnsupportedMediaType {
                        got: other.to_string(),
                        expected: "application/json",
                    })
                }
            }
            let bytes = read_limited(&req, &mut payload, body_limit(&req)).await?;
            if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                return Err(ApiError::BadRequest(
                    "the request body is empty; send a JSON object".into(),
                ));
            }
            serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
                if e.is_data() {
                    ApiError::invalid("body", e.to_string())
                } else {
                    json_error(&e)
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_errors_carry_line_and_column() {
        let err = parse_yaml_documents(b"a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        match &err {
            ApiError::MalformedBody { line, column, .. } => {
                assert!(line.is_some() && column.is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
        // A tab where YAML wants spaces, on line 3: the problem names that line.
        let err = parse_yaml_documents(b"kind: Job\nspec:\n\tbad: 1\n").unwrap_err();
        let problem = err.problem();
        assert_eq!(problem.code, "malformed_body");
        assert_eq!(problem.status, 400);
        assert_eq!(problem.line, Some(3), "{problem:?}");
        assert_eq!(problem.column, Some(1), "{problem:?}");
        assert!(problem.detail.contains("YAML"), "{problem:?}");
        // The second document's error is reported at its own line in the stream.
        let err = parse_yaml_documents(b"a: 1\n---\nb: {x: 1\n")
            .unwrap_err()
            .problem();
        assert!(err.line.is_some_and(|l| l >= 3), "{err:?}");
    }

    #[test]
    fn yaml_numbers_beyond_64_bits_become_doubles() {
        let docs = parse_yaml_documents(b"big: 3110371058246748733440\nsmall: -5\n").unwrap();
        assert_eq!(docs[0]["small"], -5);
        assert!(docs[0]["big"].as_f64().unwrap() > 3.1e21);
        let merged = parse_yaml_documents(b"base: &b {x: 1}\nderived: {<<: *b, y: 2}\n").unwrap();
        assert_eq!(merged[0]["derived"], serde_json::json!({"x": 1, "y": 2}));
        for not_finite in ["a: .nan\n", "a: -.inf\n", "a: .Inf\n"] {
            assert!(
                parse_yaml_documents(not_finite.as_bytes()).is_err(),
                "{not_finite}"
            );
        }
    }

    #[test]
    fn comment_only_yaml_has_no_documents() {
        assert!(parse_yaml_documents(b"# nothing\n# here\n").unwrap().is_empty());
        assert_eq!(parse_yaml_documents(b"a: 1\n---\nb: 2\n").unwrap().len(), 2);
    }
}
