//! KServe V1 <-> V2 (Open Inference) translation for tabular models, and the V2
//! binary tensor extension: a JSON header of `Inference-Header-Content-Length` bytes
//! followed by raw little-endian tensors, row-major, in input (or output) order.

use serde_json::{json, Map, Value};

pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtocolError {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("{HEADER_LENGTH} is {0}, past the end of a {1}-byte body")]
    HeaderTooLong(usize, usize),
    #[error("tensor {name}: {detail}")]
    Tensor { name: String, detail: String },
    #[error("{0}")]
    Shape(String),
}

fn tensor_err(name: &str, detail: impl Into<String>) -> ProtocolError {
    ProtocolError::Tensor {
        name: name.to_string(),
        detail: detail.into(),
    }
}

fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

fn f32_to_f16(value: f32) -> u16 {
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let frac = bits & 0x7f_ffff;
    if value.is_nan() {
        return 0x7e00;
    }
    if exp >= 31 {
        return sign | 0x7c00;
    }
    if exp <= 0 {
        return sign;
    }
    sign | ((exp as u16) << 10) | ((frac >> 13) as u16)
}

/// Raw little-endian bytes of one tensor to a flat JSON array.
fn decode(name: &str, datatype: &str, bytes: &[u8]) -> Result<Vec<Value>, ProtocolError> {
    if datatype == "BYTES" {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(tensor_err(name, "truncated BYTES length prefix"));
            }
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if rest.len() < 4 + len {
                return Err(tensor_err(name, "BYTES element runs past its data"));
            }
            out.push(Value::String(
                String::from_utf8_lossy(&rest[4..4 + len]).into_owned(),
            ));
            rest = &rest[4 + len..];
        }
        return Ok(out);
    }
    let size =
        element_size(datatype).ok_or_else(|| tensor_err(name, format!("unknown datatype {datatype}")))?;
    if !bytes.len().is_multiple_of(size) {
        return Err(tensor_err(
            name,
            format!(
                "{} bytes is not a whole number of {datatype} elements",
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|c| match datatype {
            "BOOL" => json!(c[0] != 0),
            "UINT8" => json!(c[0]),
            "INT8" => json!(c[0] as i8),
            "UINT16" => json!(u16::from_le_bytes([c[0], c[1]])),
            "INT16" => json!(i16::from_le_bytes([c[0], c[1]])),
            "FP16" => json!(f16_to_f32(u16::from_le_bytes([c[0], c[1]]))),
            "UINT32" => json!(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            "INT32" => json!(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            "FP32" => json!(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            "UINT64" => json!(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            "INT64" => json!(i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            _ => json!(f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
        })
        .collect())
}

fn flatten(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other.clone()),
    }
}

/// A flat or nested JSON array to raw little-endian bytes.
fn encode(name: &str, datatype: &str, data: &Value) -> Result<Vec<u8>, ProtocolError> {
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let mut out = Vec::new();
    for v in &flat {
        let bad = || tensor_err(name, format!("{v} is not a {datatype} value"));
        let f = || v.as_f64().ok_or_else(bad);
        let i = || {
            v.as_i64()
                .or_else(|| v.as_u64().map(|u| u as i64))
                .or_else(|| v.as_bool().map(i64::from))
                .ok_or_else(bad)
        };
        match datatype {
            "BYTES" => {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            "BOOL" => out.push(u8::from(v.as_bool().ok_or_else(bad)?)),
            "UINT8" | "INT8" => out.push(i()? as u8),
            "UINT16" | "INT16" => out.extend_from_slice(&(i()? as u16).to_le_bytes()),
            "FP16" => out.extend_from_slice(&f32_to_f16(f()? as f32).to_le_bytes()),
            "UINT32" | "INT32" => out.extend_from_slice(&(i()? as u32).to_le_bytes()),
            "FP32" => out.extend_from_slice(&(f()? as f32).to_le_bytes()),
            "UINT64" => out.extend_from_slice(&v.as_u64().ok_or_else(bad)?.to_le_bytes()),
            "INT64" => out.extend_from_slice(&i()?.to_le_bytes()),
            "FP64" => out.extend_from_slice(&f()?.to_le_bytes()),
            other => return Err(tensor_err(name, format!("unknown datatype {other}"))),
        }
    }
    Ok(out)
}

fn parse_json(bytes: &[u8]) -> Result<Value, ProtocolError> {
    serde_json::from_slice(bytes).map_err(|e| ProtocolError::Json(e.to_string()))
}

/// What a V2 request asked for its outputs, remembered to answer in kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BinaryOutputs {
    /// `parameters.binary_data_output` on the request.
    pub all: bool,
    /// Outputs named with `parameters.binary_data` true.
    pub named: Vec<String>,
}

impl BinaryOutputs {
    pub fn any(&self) -> bool {
        self.all || !self.named.is_empty()
    }

    fn wants(&self, name: &str) -> bool {
        self.all || self.named.iter().any(|n| n == name)
    }
}

/// A binary-extension V2 request to its pure JSON form. `header_len` is the
/// `Inference-Header-Content-Length`, `None` when the body is all JSON.
pub fn request_to_json(
    body: &[u8],
    header_len: Option<usize>,
) -> Result<(Value, BinaryOutputs), ProtocolError> {
    let split = header_len.unwrap_or(body.len());
    if split > body.len() {
        return Err(ProtocolError::HeaderTooLong(split, body.len()));
    }
    let mut doc = parse_json(&body[..split])?;
    let mut rest = &body[split..];
    let mut wanted = BinaryOutputs::default();
    if let Some(params) = doc.get_mut("parameters").and_then(Value::as_object_mut) {
        wanted.all = params
            .remove("binary_data_output")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
    }
    if let Some(outputs) = doc.get_mut("outputs").and_then(Value::as_array_mut) {
        for output in outputs {
            let name = output["name"].as_str().unwrap_or("").to_string();
            if let Some(params) = output.get_mut("parameters").and_then(Value::as_object_mut) {
                if params
                    .remove("binary_data")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false)
                {
                    wanted.named.push(name);
                }
            }
        }
    }
    if let Some(inputs) = doc.get_mut("inputs").and_then(Value::as_array_mut) {
        for input in inputs {
            let name = input["name"].as_str().unwrap_or("").to_string();
            let datatype = input["datatype"].as_str().unwrap_or("").to_string();
            let size = input
                .get_mut("parameters")
                .and_then(Value::as_object_mut)
                .and_then(|p| p.remove("binary_data_size"));
            let Some(size) = size else { continue };
            let size = size
                .as_u64()
                .ok_or_else(|| tensor_err(&name, "binary_data_size must be a byte count"))?
                as usize;
            if size > rest.len() {
                return Err(tensor_err(
                    &name,
                    format!("binary_data_size {size} runs past the body"),
                ));
            }
            let data = decode(&name, &datatype, &rest[..size])?;
            rest = &rest[size..];
            // `None`: a product past u64, which no body can hold.
            let expected: Option<u64> = input["shape"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(Value::as_u64)
                        .try_fold(1u64, u64::checked_mul)
                })
                .unwrap_or(Some(data.len() as u64));
            if expected != Some(data.len() as u64) {
                let expected = expected.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
                return Err(tensor_err(
                    &name,
                    format!("shape holds {expected} elements, the binary data {}", data.len()),
                ));
            }
            input["data"] = Value::Array(data);
            if input["parameters"].as_object().is_some_and(Map::is_empty) {
                if let Some(o) = input.as_object_mut() {
                    o.remove("parameters");
                }
            }
        }
    }
    if !rest.is_empty() {
        return Err(ProtocolError::Shape(format!(
            "{} bytes after the last binary tensor",
            rest.len()
        )));
    }
    Ok((doc, wanted))
}

/// A JSON V2 answer to what the client asked: `model_name` always present (the
/// `kserve` client requires it), outputs as binary where requested. Returns the
/// body and the `Inference-Header-Content-Length` when binary.
pub fn response_from_json(
    mut doc: Value,
    model_name: &str,
    wanted: &BinaryOutputs,
) -> Result<(Vec<u8>, Option<usize>), ProtocolError> {
    if let Some(o) = doc.as_object_mut() {
        o.entry("model_name").or_insert_with(|| json!(model_name));
    }
    if !wanted.any() {
        return Ok((serde_json::to_vec(&doc).unwrap_or_default(), None));
    }
    let mut tail = Vec::new();
    if let Some(outputs) = doc.get_mut("outputs").and_then(Value::as_array_mut) {
        for output in outputs {
            let name = output["name"].as_str().unwrap_or("").to_string();
            if !wanted.wants(&name) {
                continue;
            }
            let Some(data) = output.as_object_mut().and_then(|o| o.remove("data")) else {
                continue;
            };
            let datatype = output["datatype"].as_str().unwrap_or("").to_string();
            let bytes = encode(&name, &datatype, &data)?;
            let params = output
                .as_object_mut()
                .map(|o| o.entry("parameters").or_insert_with(|| json!({})));
            if let Some(Value::Object(params)) = params {
                params.insert("binary_data_size".into(), json!(bytes.len()));
            }
            tail.extend_from_slice(&bytes);
        }
    }
    let mut body = serde_json::to_vec(&doc).unwrap_or_default();
    let header_len = body.len();
    body.extend_from_slice(&tail);
    Ok((body, Some(header_len)))
}

fn shape_of(value: &Value) -> Vec<usize> {
    let mut shape = Vec::new();
    let mut node = value;
    while let Value::Array(items) = node {
        shape.push(items.len());
        match items.first() {
            Some(first) => node = first,
            None => break,
        }
    }
    shape
}

/// V1 `{"instances": [...]}` to a V2 request with one input tensor.
pub fn v1_to_v2(body: &[u8]) -> Result<Value, ProtocolError> {
    let doc = parse_json(body)?;
    let instances = doc
        .get("instances")
        .or_else(|| doc.get("inputs"))
        .ok_or_else(|| ProtocolError::Shape("a V1 request needs \"instances\"".into()))?;
    if !instances.is_array() {
        return Err(ProtocolError::Shape("\"instances\" must be a list".into()));
    }
    let shape = shape_of(instances);
    let mut flat = Vec::new();
    flatten(instances, &mut flat);
    if elements(&shape) != Some(flat.len()) {
        return Err(ProtocolError::Shape(
            "\"instances\" must be a rectangular list".into(),
        ));
    }
    let datatype = if flat.iter().all(|v| v.is_i64() || v.is_u64()) {
        "INT64"
    } else if flat.iter().all(Value::is_number) {
        "FP64"
    } else if flat.iter().all(Value::is_boolean) {
        "BOOL"
    } else {
        "BYTES"
    };
    if datatype == "BYTES" {
        flat = flat
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Value::String(s),
                other => Value::String(other.to_string()),
            })
            .collect();
    }
    Ok(json!({"inputs": [{"name": "input-0", "shape": shape, "datatype": datatype, "data": flat}]}))
}

/// The number of elements a shape holds; `None` past `usize`.
fn elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d))
}

/// Rows built for a shape whose elements are none (a dimension of 0): the outer
/// dimensions of `[1000000000, 0]` would otherwise be built one empty list at a time.
const MAX_EMPTY_ROWS: usize = 1 << 16;

/// `flat` as nested lists of `shape`; the caller has checked that the shape holds
/// exactly `flat.len()` elements.
fn reshape(flat: &[Value], shape: &[usize]) -> Value {
    match shape {
        [] | [_] => Value::Array(flat.to_vec()),
        [first, rest @ ..] => {
            let stride: usize = elements(rest).unwrap_or(0).max(1);
            Value::Array(
                (0..*first)
                    .map(|i| {
                        let start = i.saturating_mul(stride);
                        let end = start.saturating_add(stride);
                        reshape(flat.get(start..end).unwrap_or(&[]), rest)
                    })
                    .collect(),
            )
        }
    }
}

/// A V2 answer to V1 `{"predictions": [...]}` from its first output, one prediction
/// per row (a trailing dimension of 1 is dropped, as KServe's sklearn server answers).
pub fn v2_to_v1(body: &[u8]) -> Result<Value, ProtocolError> {
    let doc = parse_json(body)?;
    let output = doc["outputs"]
        .as_array()
        .and_then(|o| o.first())
        .ok_or_else(|| ProtocolError::Shape("the V2 answer has no outputs".into()))?;
    let mut flat = Vec::new();
    flatten(&output["data"], &mut flat);
    let mut shape: Vec<usize> = output["shape"]
        .as_array()
        .map(|s| s.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect())
        .unwrap_or_else(|| vec![flat.len()]);
    while shape.len() > 1 && shape.last() == Some(&1) {
        shape.pop();
    }
    // The replica's answer is checked as a request would be: a shape that does not
    // hold its data, or that would build more empty rows than any answer needs,
    // is refused rather than followed.
    let rows_before_empty = shape
        .iter()
        .take_while(|d| **d != 0)
        .try_fold(1usize, |n, d| n.checked_mul(*d));
    let fits = match elements(&shape) {
        Some(0) => rows_before_empty.is_some_and(|rows| rows <= MAX_EMPTY_ROWS),
        Some(n) => n == flat.len(),
        None => false,
    };
    if !fits {
        return Err(ProtocolError::Shape(format!(
            "the V2 answer's shape {shape:?} does not hold its {} elements",
            flat.len()
        )));
    }
    Ok(json!({"predictions": reshape(&flat, &shape)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tritonclient's default request: FP64 [2,4] as binary, binary outputs wanted.
    fn triton_body() -> (Vec<u8>, usize) {
        let header = br#"{"inputs":[{"name":"INPUT0","shape":[2,4],"datatype":"FP64","parameters":{"binary_data_size":64}}],"parameters":{"binary_data_output":true}}"#;
        let mut body = header.to_vec();
        for i in 0..8 {
            body.extend_from_slice(&(i as f64).to_le_bytes());
        }
        (body, header.len())
    }

    #[test]
    fn binary_request_becomes_json_and_the_answer_binary_again() {
        let (body, len) = triton_body();
        let (doc, wanted) = request_to_json(&body, Some(len)).unwrap();
        assert_eq!(
            doc["inputs"][0]["data"],
            json!([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
        );
        assert!(doc["inputs"][0].get("parameters").is_none());
        assert!(wanted.all);
        let answer =
            json!({"outputs": [{"name": "predict", "shape": [2], "datatype": "INT64", "data": [1, 2]}]});
        let (bytes, header) = response_from_json(answer, "iris", &wanted).unwrap();
        let header = header.unwrap();
        let head: Value = serde_json::from_slice(&bytes[..header]).unwrap();
        assert_eq!(head["model_name"], "iris");
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 16);
        assert_eq!(&bytes[header..header + 8], &1i64.to_le_bytes());
    }

    #[test]
    fn shapes_past_the_integer_range_are_refused_not_multiplied() {
        // A shape whose product overflows u64 is a 4xx, never an overflow.
        let header = br#"{"inputs":[{"name":"x","shape":[9223372036854775807,4],"datatype":"INT8","parameters":{"binary_data_size":4}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&[1, 2, 3, 4]);
        let err = request_to_json(&body, Some(header.len())).unwrap_err();
        assert!(err.to_string().contains("more than 2^64"), "{err}");
        // V1 instances nested 70 deep, two wide at the first element: 2^70 by shape.
        let mut nested = String::from("[1]");
        for _ in 0..70 {
            nested = format!("[{nested},[1]]");
        }
        let v1 = format!("{{\"instances\": {nested}}}");
        assert!(v1_to_v2(v1.as_bytes()).is_err());
        // A replica's answer with a shape that does not hold its data, or whose empty
        // rows would number in the billions, is refused rather than built.
        for answer in [
            r#"{"outputs": [{"name": "p", "shape": [9223372036854775807, 2], "datatype": "FP64", "data": [1, 2]}]}"#,
            r#"{"outputs": [{"name": "p", "shape": [4000000000, 0], "datatype": "FP64", "data": []}]}"#,
            r#"{"outputs": [{"name": "p", "shape": [3], "datatype": "FP64", "data": [1, 2]}]}"#,
        ] {
            assert!(v2_to_v1(answer.as_bytes()).is_err(), "{answer}");
        }
        let empty =
            v2_to_v1(br#"{"outputs": [{"name": "p", "shape": [2, 0], "datatype": "FP64", "data": []}]}"#)
                .unwrap();
        assert_eq!(empty, json!({"predictions": [[], []]}));
    }

    #[test]
    fn malformed_binary_is_refused() {
        let (body, len) = triton_body();
        assert!(request_to_json(&body[..body.len() - 1], Some(len)).is_err());
        assert!(matches!(
            request_to_json(&body, Some(body.len() + 1)),
            Err(ProtocolError::HeaderTooLong(..))
        ));
        let bytes = encode("s", "BYTES", &json!(["ab", "c"])).unwrap();
        assert_eq!(
            decode("s", "BYTES", &bytes).unwrap(),
            vec![json!("ab"), json!("c")]
        );
        assert_eq!(f16_to_f32(f32_to_f16(1.5)), 1.5);
    }

    #[test]
    fn v1_and_v2_translate_both_ways() {
        let v2 = v1_to_v2(br#"{"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}"#).unwrap();
        assert_eq!(v2["inputs"][0]["shape"], json!([2, 4]));
        assert_eq!(v2["inputs"][0]["datatype"], "FP64");
        let v1 = v2_to_v1(
            br#"{"outputs": [{"name": "predict", "shape": [2, 1], "datatype": "INT64", "data": [1, 1]}]}"#,
        )
        .unwrap();
        assert_eq!(v1, json!({"predictions": [1, 1]}));
        let v1 = v2_to_v1(br#"{"outputs": [{"name": "p", "shape": [2, 2], "datatype": "FP64", "data": [0.1, 0.9, 0.8, 0.2]}]}"#).unwrap();
        assert_eq!(v1, json!({"predictions": [[0.1, 0.9], [0.8, 0.2]]}));
        assert!(v1_to_v2(br#"{"instances": [[1, 2], [3]]}"#).is_err());
    }
}
