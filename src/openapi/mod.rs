//! OpenAPI: the export of the governed API as an OpenAPI 3.1 document
//! (`export`, DESIGN §7), and the import of an existing OpenAPI 3.0/3.1
//! spec as config YAML (`import`).
//!
//! The export is a function of the config alone, so `tollgate openapi`,
//! the admin API's `/openapi.json` and a committed copy all agree:
//!
//! ```no_run
//! let loaded = tollgate::config::load_file(std::path::Path::new("tollgate.yaml")).unwrap();
//! let doc: serde_json::Value = tollgate::openapi::export(&loaded.config);
//! assert_eq!(doc["openapi"], "3.1.0");
//! ```

pub mod export;
pub mod import;

pub use export::{export, to_json, to_yaml};
pub use import::{import, ImportOptions};

/// What `tollgate openapi` prints: the export of the config at `path` as
/// `json` or `yaml`; `Err` lines are config errors or a bad format.
pub fn export_file(path: &std::path::Path, format: &str) -> Result<String, Vec<String>> {
    let loaded = crate::config::load_file(path)
        .map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    match format {
        "json" => Ok(to_json(&loaded.config)),
        "yaml" => Ok(to_yaml(&loaded.config)),
        other => Err(vec![format!("unknown format `{other}`: use json or yaml")]),
    }
}
