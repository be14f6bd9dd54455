//! Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`), read for the
//! few messages kubectl sends that way to Hearth: kubectl 1.35's typed clients post
//! built-in kinds (`SelfSubjectReview`, `SelfSubjectAccessReview`, ...) as protobuf,
//! accepting JSON back, and do not fall back to JSON on a 415.
//!
//! The envelope (k8s.io/apimachinery/pkg/runtime/serializer/protobuf): the magic
//! `k8s\0`, then a `runtime.Unknown` message: `typeMeta` (1: `apiVersion` 1, `kind` 2),
//! `raw` (2: the object's own message), `contentEncoding` (3), `contentType` (4).
//! Objects are read into the JSON shape their Kubernetes type has, so the same serde
//! types take both encodings. Field numbers follow `k8s.io/api/*/v1/generated.proto`.

use serde_json::{json, Map, Value};

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtobufError {
    #[error("the protobuf body does not start with Kubernetes' magic bytes k8s\\0")]
    Magic,
    #[error("the protobuf body is malformed: {0}")]
    Malformed(&'static str),
    #[error("{kind:?} ({api_version}) is not taken as protobuf here; send application/json")]
    Kind { api_version: String, kind: String },
}

enum Field<'a> {
    Varint,
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &mut &[u8]) -> Result<u64, ProtobufError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf
            .split_first()
            .ok_or(ProtobufError::Malformed("truncated varint"))?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ProtobufError::Malformed("varint longer than 64 bits"))
}

/// The fields of one message, in order: `(number, value)`.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ProtobufError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let field = match key & 7 {
            0 => {
                varint(&mut buf)?;
                Field::Varint
            }
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                buf = buf
                    .get(width..)
                    .ok_or(ProtobufError::Malformed("truncated fixed field"))?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?)
                    .map_err(|_| ProtobufError::Malformed("length out of range"))?;
                let bytes = buf
                    .get(..len)
                    .ok_or(ProtobufError::Malformed("truncated field"))?;
                buf = &buf[len..];
                Field::Bytes(bytes)
            }
            _ => return Err(ProtobufError::Malformed("unsupported wire type")),
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

fn string(bytes: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtobufError::Malformed("a string is not UTF-8"))
}

/// A message whose fields of interest are all strings, as a JSON object of `names`
/// (`(field number, JSON name)`); other fields are skipped.
fn strings(bytes: &[u8], names: &[(u64, &str)]) -> Result<Value, ProtobufError> {
    let mut object = Map::new();
    for (number, field) in fields(bytes)? {
        if let (Some((_, name)), Field::Bytes(b)) = (names.iter().find(|(n, _)| *n == number), field) {
            object.insert(name.to_string(), Value::String(string(b)?));
        }
    }
    Ok(Value::Object(object))
}

/// The first length-delimited field `number` of a message.
fn message(bytes: &[u8], number: u64) -> Result<Option<&[u8]>, ProtobufError> {
    Ok(fields(bytes)?.into_iter().find_map(|(n, f)| match f {
        Field::Bytes(b) if n == number => Some(b),
        _ => None,
    }))
}

/// Decodes an enveloped object into its JSON shape (`apiVersion`, `kind`, `spec`).
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let unknown = body.strip_prefix(MAGIC).ok_or(ProtobufError::Magic)?;
    let type_meta = message(unknown, 1)?.unwrap_or_default();
    let type_meta = strings(type_meta, &[(1, "apiVersion"), (2, "kind")])?;
    let api_version = type_meta["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = type_meta["kind"].as_str().unwrap_or_default().to_string();
    let raw = message(unknown, 2)?.unwrap_or_default();
    let spec = match (api_version.as_str(), kind.as_str()) {
        ("authentication.k8s.io/v1", "SelfSubjectReview") => None,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            let spec = message(raw, 2)?.unwrap_or_default();
            let mut out = Map::new();
            if let Some(attributes) = message(spec, 1)? {
                let names = [
                    (1, "namespace"),
                    (2, "verb"),
                    (3, "group"),
                    (4, "version"),
                    (5, "resource"),
                    (6, "subresource"),
                    (7, "name"),
                ];
                out.insert("resourceAttributes".into(), strings(attributes, &names)?);
            }
            if let Some(attributes) = message(spec, 2)? {
                out.insert(
                    "nonResourceAttributes".into(),
                    strings(attributes, &[(1, "path"), (2, "verb")])?,
                );
            }
            Some(Value::Object(out))
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            let spec = message(raw, 2)?.unwrap_or_default();
            Some(strings(spec, &[(1, "namespace")])?)
        }
        _ => return Err(ProtobufError::Kind { api_version, kind }),
    };
    let mut object = json!({"apiVersion": api_version, "kind": kind});
    if let Some(spec) = spec {
        object["spec"] = spec;
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes kubectl 1.35.2 sent for `kubectl auth whoami` (from its `-v=8` log).
    const WHOAMI: &[u8] = b"k8s\x00\x0a\x2d\x0a\x18authentication.k8s.io/v1\x12\x11SelfSubjectReview\x12\x1a\x0a\x10\x0a\x00\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x06\x0a\x04\x0a\x00\x12\x00\x1a\x00\x22\x00";

    fn len(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, body.len() as u8];
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn reads_kubectls_self_subject_review() {
        let doc = decode(WHOAMI).unwrap();
        assert_eq!(
            doc,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        );
    }

    #[test]
    fn reads_an_access_review_spec() {
        let attributes = [
            len(0x0a, b"alice"),
            len(0x12, b"create"),
            len(0x1a, b"batch"),
            len(0x2a, b"jobs"),
        ]
        .concat();
        let spec = len(0x0a, &attributes);
        let raw = [len(0x0a, b""), len(0x12, &spec)].concat();
        let type_meta = [
            len(0x0a, b"authorization.k8s.io/v1"),
            len(0x12, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [MAGIC.to_vec(), len(0x0a, &type_meta), len(0x12, &raw)].concat();
        let doc = decode(&body).unwrap();
        assert_eq!(
            doc["spec"]["resourceAttributes"],
            json!({"namespace": "alice", "verb": "create", "group": "batch", "resource": "jobs"})
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(decode(b"{}"), Err(ProtobufError::Magic));
        assert!(matches!(
            decode(b"k8s\x00\x0a\xff"),
            Err(ProtobufError::Malformed(_))
        ));
        let type_meta = [len(0x0a, b"batch/v1"), len(0x12, b"Job")].concat();
        let body = [MAGIC.to_vec(), len(0x0a, &type_meta)].concat();
        assert!(matches!(decode(&body), Err(ProtobufError::Kind { .. })));
    }
}
