//! The `hearth` command line for what kubectl does not do: log in, run a compiled KFP
//! pipeline and follow it, watch GPUs and the queue, manage users and tokens. Thin over
//! the HTTP API (the same calls an SDK makes); see `client` for where it connects.

pub mod access;
pub mod client;
pub mod run;
pub mod top;
pub mod trust;

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::Value;

pub use client::CliError;

/// How a command that prints data prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Columns for a person.
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(Args, Clone, Copy, Debug, Default)]
pub struct OutputFlag {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Prints `data` as JSON or YAML; returns false for `table`, which the caller prints.
pub fn print_data(output: Output, data: &Value) -> Result<bool, CliError> {
    match output {
        Output::Table => Ok(false),
        Output::Json => {
            let text = serde_json::to_string_pretty(data).map_err(|e| CliError::Output(e.to_string()))?;
            println!("{text}");
            Ok(true)
        }
        Output::Yaml => {
            let text = serde_yaml_ng::to_string(data).map_err(|e| CliError::Output(e.to_string()))?;
            print!("{text}");
            Ok(true)
        }
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A string field of a JSON reply, `-` when absent.
pub fn field(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Ends a CLI command: errors as one line on stderr, exit code 1.
pub fn finish(command: &str, result: Result<ExitCode, CliError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hearth {command}: {e}");
            ExitCode::FAILURE
        }
    }
}
