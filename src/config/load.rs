//! Loading a config file. (Placeholder: first error only; replaced by the
//! collecting loader with a span index.)

use std::path::{Path, PathBuf};

use super::schema::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub file: PathBuf,
    pub base_dir: PathBuf,
}

impl LoadedConfig {
    /// An error at `path` (segments) of the main config file.
    pub fn error_at<S: AsRef<str>>(&self, path: &[S], message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: 0,
            column: 0,
            path: super::display_path(path),
            message: message.into(),
        }
    }

    /// An error at `path` inside the named policy's definition, wherever it
    /// was written (`policies:` or an included file).
    pub fn policy_error<S: AsRef<str>>(
        &self,
        name: &str,
        path: &[S],
        message: impl Into<String>,
    ) -> ConfigError {
        let mut full = vec!["policies".to_string(), name.to_string()];
        full.extend(path.iter().map(|s| s.as_ref().to_string()));
        self.error_at(&full, message)
    }
}

pub fn load_file(path: &Path) -> Result<LoadedConfig, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read: {e}"),
        }]
    })?;
    load_str(path, &text)
}

pub fn load_str(file: &Path, text: &str) -> Result<LoadedConfig, Vec<ConfigError>> {
    let de = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Config>(de) {
        Ok(config) => Ok(LoadedConfig {
            config,
            file: file.to_path_buf(),
            base_dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        }),
        Err(e) => {
            let path = super::display_path(&super::path_segments(e.path()));
            let inner = e.into_inner();
            let (line, column) = inner
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            Err(vec![ConfigError {
                file: file.to_path_buf(),
                line,
                column,
                path,
                message: inner.to_string(),
            }])
        }
    }
}
