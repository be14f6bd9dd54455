//! Kubernetes resource quantities (`500m`, `2`, `1.5Gi`, `128M`, `1e9`).

use super::strict::FieldError;

/// CPU as thousandths of a core.
pub fn cpu_millis(text: &str, path: &str) -> Result<u64, FieldError> {
    let value = parse(text, path)?;
    Ok((value * 1000.0).ceil() as u64)
}

pub fn bytes(text: &str, path: &str) -> Result<u64, FieldError> {
    Ok(parse(text, path)?.ceil() as u64)
}

pub fn count(text: &str, path: &str) -> Result<u32, FieldError> {
    let value = parse(text, path)?;
    if value.fract() != 0.0 || value > f64::from(u32::MAX) {
        return Err(FieldError::invalid(
            path,
            format!("{text:?} must be a whole number"),
        ));
    }
    Ok(value as u32)
}

fn parse(text: &str, path: &str) -> Result<f64, FieldError> {
    let bad = || {
        FieldError::invalid(
            path,
            format!("{text:?} is not a valid quantity (examples: 500m, 2, 1.5Gi, 128M)"),
        )
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => {
            let exponent: i32 = s[1..].parse().map_err(|_| bad())?;
            10f64.powi(exponent)
        }
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    if value < 0.0 || !value.is_finite() {
        return Err(bad());
    }
    Ok(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_quantities() {
        assert_eq!(cpu_millis("500m", "cpu").unwrap(), 500);
        assert_eq!(cpu_millis("2", "cpu").unwrap(), 2000);
        assert_eq!(cpu_millis("0.25", "cpu").unwrap(), 250);
        assert_eq!(bytes("1Gi", "mem").unwrap(), 1 << 30);
        assert_eq!(bytes("128M", "mem").unwrap(), 128_000_000);
        assert_eq!(bytes("1e3", "mem").unwrap(), 1000);
        assert_eq!(count("2", "gpu").unwrap(), 2);
        assert!(count("1.5", "gpu").is_err());
        assert!(bytes("lots", "mem").is_err());
        assert!(bytes("-1", "mem").is_err());
    }
}
