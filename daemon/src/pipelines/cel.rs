//! The subset of CEL that the KFP compiler emits in `triggerPolicy.condition` and
//! `parameterExpressionSelector`: `inputs.parameter_values['k']`, string, number, bool
//! and null literals, `int()`, `double()`, `string()`, `bool()`, `parseJson()`, indexing
//! with `[...]`, `!`, `&&`, `||`, `==`, `!=`, `<`, `<=`, `>`, `>=`. Anything else is
//! refused when the pipeline is uploaded, so a run never meets an expression it cannot
//! evaluate.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    /// `inputs.parameter_values['k']`
    Param(String),
    /// `string_value` inside a `parameterExpressionSelector`: the input itself.
    Input,
    Call(String, Box<Expr>),
    Index(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Bin(Box<Expr>, Op, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64, bool),
    Sym(&'static str),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            let quote = c;
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('\\') => {
                        let next = chars.get(i + 1).ok_or("dangling escape")?;
                        s.push(match next {
                            'n' => '\n',
                            't' => '\t',
                            other => *other,
                        });
                        i += 2;
                    }
                    Some(ch) if *ch == quote => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
            continue;
        }
        if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == 'e') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let n: f64 = text.parse().map_err(|_| format!("bad number {text:?}"))?;
            out.push(Tok::Num(n, !text.contains(['.', 'e'])));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let sym = match two.as_str() {
            "&&" => Some("&&"),
            "||" => Some("||"),
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            _ => None,
        };
        if let Some(sym) = sym {
            out.push(Tok::Sym(sym));
            i += 2;
            continue;
        }
        let sym = match c {
            '!' => "!",
            '<' => "<",
            '>' => ">",
            '(' => "(",
            ')' => ")",
            '[' => "[",
            ']' => "]",
            _ => return Err(format!("unexpected character {c:?}")),
        };
        out.push(Tok::Sym(sym));
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    /// Set when the text is CEL but names what this subset does not evaluate.
    unsupported: bool,
}

/// Why an expression was not taken: it is not CEL at all, or it is CEL that uses an
/// identifier or function this subset does not evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CelError {
    Syntax(String),
    Unsupported(String),
}

const FUNCTIONS: &[&str] = &["int", "double", "string", "bool", "parseJson"];

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, sym: &str) -> Result<(), String> {
        if self.eat(sym) {
            Ok(())
        } else {
            Err(format!("expected {sym:?} at token {}", self.pos))
        }
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Bin(Box::new(left), Op::Or, Box::new(self.and()?));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.cmp()?;
        while self.eat("&&") {
            left = Expr::Bin(Box::new(left), Op::And, Box::new(self.cmp()?));
        }
        Ok(left)
    }
    fn cmp(&mut self) -> Result<Expr, String> {
        let left = self.unary()?;
        let ops = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        for (sym, op) in ops {
            if self.eat(sym) {
                return Ok(Expr::Bin(Box::new(left), op, Box::new(self.unary()?)));
            }
        }
        Ok(left)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        let mut e = self.primary()?;
        while self.eat("[") {
            let idx = self.or()?;
            self.expect("]")?;
            e = Expr::Index(Box::new(e), Box::new(idx));
        }
        Ok(e)
    }
    fn primary(&mut self) -> Result<Expr, String> {
        let tok = self.peek().cloned().ok_or("unexpected end of expression")?;
        self.pos += 1;
        match tok {
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s))),
            Tok::Num(n, integral) => Ok(Expr::Lit(if integral && n.abs() < 9.0e15 {
                Value::from(n as i64)
            } else {
                Value::from(n)
            })),
            Tok::Sym("(") => {
                let e = self.or()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Ident(id) => match id.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "null" => Ok(Expr::Lit(Value::Null)),
                "string_value" => Ok(Expr::Input),
                "inputs.parameter_values" => {
                    self.expect("[")?;
                    let key = match self.peek().cloned() {
                        Some(Tok::Str(k)) => k,
                        _ => return Err("inputs.parameter_values takes a quoted key".into()),
                    };
                    self.pos += 1;
                    self.expect("]")?;
                    Ok(Expr::Param(key))
                }
                f if FUNCTIONS.contains(&f) => {
                    self.expect("(")?;
                    let arg = self.or()?;
                    self.expect(")")?;
                    Ok(Expr::Call(f.to_string(), Box::new(arg)))
                }
                other => {
                    self.unsupported = true;
                    Err(format!("unsupported identifier or function {other:?}"))
                }
            },
            Tok::Sym(s) => Err(format!("unexpected {s:?}")),
        }
    }
}

pub fn parse(src: &str) -> Result<Expr, String> {
    parse_checked(src).map_err(|e| match e {
        CelError::Syntax(e) | CelError::Unsupported(e) => e,
    })
}

/// Parses, telling text that is not an expression from one this subset lacks.
pub fn parse_checked(src: &str) -> Result<Expr, CelError> {
    let mut p = Parser {
        toks: lex(src).map_err(CelError::Syntax)?,
        pos: 0,
        unsupported: false,
    };
    let e = p.or().map_err(|e| {
        if p.unsupported {
            CelError::Unsupported(e)
        } else {
            CelError::Syntax(e)
        }
    })?;
    if p.pos != p.toks.len() {
        return Err(CelError::Syntax(format!(
            "unexpected trailing input at token {}",
            p.pos
        )));
    }
    Ok(e)
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn truthy(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        // A BOOLEAN output read through `parameter_values` may arrive as text.
        Value::String(s) if s == "true" || s == "True" => Ok(true),
        Value::String(s) if s == "false" || s == "False" => Ok(false),
        other => Err(format!("{other} is not a boolean")),
    }
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), _) | (_, Value::Number(_)) => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
        (Value::Bool(x), Value::String(_)) => truthy(b).map(|y| y == *x).unwrap_or(false),
        (Value::String(_), Value::Bool(y)) => truthy(a).map(|x| x == *y).unwrap_or(false),
        _ => a == b,
    }
}

pub fn eval(e: &Expr, params: &serde_json::Map<String, Value>, input: &Value) -> Result<Value, String> {
    Ok(match e {
        Expr::Lit(v) => v.clone(),
        Expr::Input => input.clone(),
        Expr::Param(k) => params
            .get(k)
            .cloned()
            .ok_or_else(|| format!("parameter {k:?} has no value"))?,
        Expr::Call(f, a) => {
            let v = eval(a, params, input)?;
            match f.as_str() {
                "int" => {
                    let n = num(&v).ok_or_else(|| format!("int({v}) is not a number"))?;
                    Value::from(n.trunc() as i64)
                }
                "double" => Value::from(num(&v).ok_or_else(|| format!("double({v}) is not a number"))?),
                "string" => Value::String(match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                }),
                "bool" => Value::Bool(truthy(&v)?),
                "parseJson" => match v {
                    Value::String(s) => serde_json::from_str(&s).map_err(|e| format!("parseJson: {e}"))?,
                    other => other,
                },
                other => return Err(format!("unknown function {other}")),
            }
        }
        Expr::Index(a, i) => {
            let base = eval(a, params, input)?;
            let base = match base {
                Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                other => other,
            };
            let idx = eval(i, params, input)?;
            match (&base, &idx) {
                (Value::Object(m), Value::String(k)) => m.get(k).cloned().unwrap_or(Value::Null),
                (Value::Array(a), i) => {
                    let n = num(i).ok_or("array index is not a number")? as usize;
                    a.get(n).cloned().unwrap_or(Value::Null)
                }
                _ => return Err(format!("cannot index {base} with {idx}")),
            }
        }
        Expr::Not(a) => Value::Bool(!truthy(&eval(a, params, input)?)?),
        Expr::Bin(a, op, b) => {
            let x = eval(a, params, input)?;
            match op {
                Op::And => {
                    return Ok(Value::Bool(truthy(&x)? && truthy(&eval(b, params, input)?)?));
                }
                Op::Or => {
                    return Ok(Value::Bool(truthy(&x)? || truthy(&eval(b, params, input)?)?));
                }
                _ => {}
            }
            let y = eval(b, params, input)?;
            let ord = || -> Result<std::cmp::Ordering, String> {
                match (&x, &y) {
                    (Value::String(p), Value::String(q)) => Ok(p.cmp(q)),
                    _ => {
                        let (p, q) = (num(&x), num(&y));
                        match (p, q) {
                            (Some(p), Some(q)) => p.partial_cmp(&q).ok_or_else(|| "NaN".to_string()),
                            _ => Err(format!("cannot order {x} and {y}")),
                        }
                    }
                }
            };
            Value::Bool(match op {
                Op::Eq => loose_eq(&x, &y),
                Op::Ne => !loose_eq(&x, &y),
                Op::Lt => ord()?.is_lt(),
                Op::Le => ord()?.is_le(),
                Op::Gt => ord()?.is_gt(),
                Op::Ge => ord()?.is_ge(),
                // Short-circuited above.
                Op::And | Op::Or => false,
            })
        }
    })
}

pub fn condition(src: &str, params: &serde_json::Map<String, Value>) -> Result<bool, String> {
    truthy(&eval(&parse(src)?, params, &Value::Null)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn compiler_forms() {
        let ps = p(json!({"pipelinechannel--flip-coin-Output": "heads", "n": "7", "b": true}));
        assert!(condition(
            "inputs.parameter_values['pipelinechannel--flip-coin-Output'] == 'heads'",
            &ps
        )
        .unwrap());
        assert!(!condition(
            "!(inputs.parameter_values['pipelinechannel--flip-coin-Output'] == 'heads')",
            &ps
        )
        .unwrap());
        assert!(condition("int(inputs.parameter_values['n']) > 5", &ps).unwrap());
        assert!(!condition("int(inputs.parameter_values['n']) <= 5 && true", &ps).unwrap());
        assert!(condition("inputs.parameter_values['b'] == true || false", &ps).unwrap());
        let e = parse("parseJson(string_value)[\"B_b\"]").unwrap();
        assert_eq!(
            eval(&e, &ps, &json!("{\"A_a\":1,\"B_b\":\"x\"}")).unwrap(),
            json!("x")
        );
        assert!(matches!(
            parse_checked("size(inputs.parameter_values['x']) > 1"),
            Err(CelError::Unsupported(_))
        ));
        assert!(matches!(
            parse_checked("inputs.parameter_values['x'] == == 'a'"),
            Err(CelError::Syntax(_))
        ));
        assert!(matches!(parse_checked("'unterminated"), Err(CelError::Syntax(_))));
        assert!(condition("inputs.parameter_values['missing'] == 1", &ps).is_err());
    }
}
