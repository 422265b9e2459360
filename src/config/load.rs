//! Loading a config file: YAML text -> [`Config`], with every mistake
//! reported as `FILE:LINE:COL: path: message`, all of them at once.
//!
//! The steps:
//! 1. Parse. A YAML syntax error (or a key written twice) stops here, with
//!    its position. The text is also indexed by node path
//!    ([`SpanIndex`]), because `serde_yaml::Value` keeps no positions.
//! 2. Deserialize piece by piece, so independent mistakes are each
//!    reported: the top-level settings, each client, each policy (through
//!    [`PolicyDef::from_value`], which knows the path inside it), each
//!    `apply` entry, each API and each of its operations. Inside one piece,
//!    `Reader::peel` deletes a key that failed and tries again, so two
//!    bad fields of one struct are two errors.
//! 3. Read `include:` files of named policies, each with its own index.
//! 4. Check what serde cannot (`validate`): references, uniqueness, ...
//!
//! A piece that failed is left out (a key that failed takes its default)
//! and the rest is read on, so the checks of step 4 — and the gateway
//! compiler after them ([`Reading::add_later`]) — still run on what could
//! be read: one run reports every mistake of a file. A later finding at or
//! around a place already reported is dropped, since it may only echo the
//! first mistake.
//!
//! Errors come out sorted by file, line and column.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::schema::{ApiConfig, ClientConfig, Config, OperationConfig, PolicyDef, PolicyRef};
use super::segment_strings;
use super::spans::{Pos, SpanIndex};

/// One mistake in the config, where the user must fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the mistake is in (the main config, or an included policy file).
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// The key path users read, e.g. `apis[0].operations[2].path`; empty
    /// for the whole file.
    pub path: String,
    /// What is wrong, in the user's words.
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

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new<S: AsRef<str>>(file: &Path, pos: Pos, path: &[S], message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            path: super::display_path(path),
            message: message.into(),
        }
    }
}

/// A parsed config and what is needed to point at any part of it later
/// (the gateway compiler reports its own findings through
/// [`LoadedConfig::error_at`] and [`LoadedConfig::policy_error`]).
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The parsed config.
    pub config: Config,
    /// The main config file.
    pub file: PathBuf,
    /// The main file's directory: relative file names resolve against it.
    pub base_dir: PathBuf,
    sources: Arc<Sources>,
}

/// Every file read, and where each named policy was defined.
#[derive(Debug, Default)]
struct Sources {
    /// `[0]` is the main file, then included files in load order.
    files: Vec<Source>,
    policies: HashMap<String, PolicyOrigin>,
    /// Policies of included files whose definition did not read: defined,
    /// so naming them in `apply` is not a second mistake.
    unreadable: std::collections::BTreeSet<String>,
}

#[derive(Debug)]
struct Source {
    file: PathBuf,
    spans: SpanIndex,
}

/// Where a named policy's definition was written.
#[derive(Debug, Clone)]
struct PolicyOrigin {
    /// Index into `Sources::files`.
    source: usize,
    /// The definition's path in that file: `["policies", name]` in the main
    /// file, `[name]` in an included one.
    path: Vec<String>,
}

impl LoadedConfig {
    /// Every file this config was read from: the main file, then the
    /// included ones (what `reload: watch` polls).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.sources.files.iter().map(|s| s.file.as_path())
    }

    /// Whether a policy of that name is defined, even if its definition
    /// did not read (it was reported then).
    pub fn defines_policy(&self, name: &str) -> bool {
        self.config.policies.contains_key(name)
            || self.sources.policies.contains_key(name)
            || self.sources.unreadable.contains(name)
    }

    /// An error at `path` (segments, e.g. `["apis", "0", "operations", "2",
    /// "path"]`) of the main config file. When the path was not written
    /// (a missing field), the nearest written ancestor is used.
    pub fn error_at<S: AsRef<str>>(&self, path: &[S], message: impl Into<String>) -> ConfigError {
        let pos = self.sources.files[0].spans.locate(path);
        ConfigError::new(&self.file, pos, path, message)
    }

    /// An error at `path` inside the named policy's definition, wherever it
    /// was written (`policies:` or an included file).
    pub fn policy_error<S: AsRef<str>>(
        &self,
        name: &str,
        path: &[S],
        message: impl Into<String>,
    ) -> ConfigError {
        let origin = self
            .sources
            .policies
            .get(name)
            .cloned()
            .unwrap_or(PolicyOrigin {
                source: 0,
                path: vec!["policies".to_string(), name.to_string()],
            });
        let mut full = origin.path;
        full.extend(path.iter().map(|s| s.as_ref().to_string()));
        let source = &self.sources.files[origin.source];
        ConfigError::new(&source.file, source.spans.locate(&full), &full, message)
    }
}

/// A config as far as it could be read, and every mistake found in it so
/// far. `loaded` is there whenever enough was read to check further (the
/// compiler then adds its own findings); it is only valid to serve when
/// `errors` is empty.
#[derive(Debug)]
pub struct Reading {
    /// The config, when enough was read to check further.
    pub loaded: Option<LoadedConfig>,
    /// Every mistake found so far.
    pub errors: Vec<ConfigError>,
}

impl Reading {
    fn failed(errors: Vec<ConfigError>) -> Reading {
        Reading {
            loaded: None,
            errors: sorted(errors),
        }
    }

    /// The config, or every mistake.
    pub fn into_result(self) -> Result<LoadedConfig, Vec<ConfigError>> {
        match self.loaded {
            Some(loaded) if self.errors.is_empty() => Ok(loaded),
            _ => Err(self.errors),
        }
    }

    /// Adds the findings of a later pass, leaving out those at, inside or
    /// around a place an earlier pass reported: a piece that failed to
    /// read was left out or defaulted, and what a later pass says of it
    /// would only echo the first mistake.
    pub fn add_later(&mut self, later: Vec<ConfigError>) {
        let earlier = std::mem::take(&mut self.errors);
        let echoes = |e: &ConfigError| {
            earlier
                .iter()
                .any(|first| first.file == e.file && nested(place(&first.path), &e.path))
        };
        let mut all: Vec<ConfigError> = later.into_iter().filter(|e| !echoes(e)).collect();
        all.extend(earlier);
        self.errors = sorted(all);
    }
}

/// What a mistake at `path` leaves unreliable: the innermost list item it
/// is in (`apis[0].operations[1]`), else its named policy
/// (`policies.slow`), else its top-level section (`state`) — a key that
/// failed was deleted and defaulted, and the checks of its neighbours may
/// only echo that.
fn place(path: &str) -> &str {
    if let Some(i) = path.rfind(']') {
        return &path[..=i];
    }
    let section_end = |from: usize| path[from..].find('.').map_or(path.len(), |i| from + i);
    match path.strip_prefix("policies.") {
        Some(_) => &path[..section_end("policies.".len())],
        None => &path[..section_end(0)],
    }
}

/// Whether one key path lies inside the other (or they are the same):
/// `apis[0]` and `apis[0].operations[1]`, but not `apis[0]` and `apis[01]`.
fn nested(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.is_empty()
        || (long.starts_with(short)
            && matches!(long.as_bytes().get(short.len()), None | Some(b'.' | b'[')))
}

/// Reads and checks the config file at `path` and its includes: the config, or every
/// mistake found.
pub fn load_file(path: &Path) -> Result<LoadedConfig, Vec<ConfigError>> {
    read_file(path).into_result()
}

/// Loads a config from `text`. `file` names it in errors, and its parent
/// directory is where `include:` globs are resolved.
pub fn load_str(file: &Path, text: &str) -> Result<LoadedConfig, Vec<ConfigError>> {
    read_str(file, text).into_result()
}

/// Reads and checks the config file at `path` as far as it goes.
pub fn read_file(path: &Path) -> Reading {
    match std::fs::read_to_string(path) {
        Ok(text) => read_str(path, &text),
        Err(e) => Reading::failed(vec![ConfigError::new::<&str>(
            path,
            Pos::START,
            &[],
            format!("cannot read the config: {e}"),
        )]),
    }
}

/// Reads and checks a config from `text` as far as it goes.
pub fn read_str(file: &Path, text: &str) -> Reading {
    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let (root, spans) = match parse_document(file, text) {
        Ok(parsed) => parsed,
        Err(errors) => return Reading::failed(errors),
    };
    let mut sources = Sources {
        files: vec![Source {
            file: file.to_path_buf(),
            spans,
        }],
        policies: HashMap::new(),
        unreadable: Default::default(),
    };
    let mut errors = Vec::new();
    let Some(config) = read_config(root, &mut sources, &base_dir, &mut errors) else {
        return Reading::failed(errors);
    };
    let loaded = LoadedConfig {
        config,
        file: file.to_path_buf(),
        base_dir,
        sources: Arc::new(sources),
    };
    let checked = super::validate::validate(&loaded);
    let mut reading = Reading {
        loaded: Some(loaded),
        errors: sorted(errors),
    };
    reading.add_later(checked);
    reading
}

fn sorted(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    // Stable: errors at one position keep the order they were found in.
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    errors.dedup();
    errors
}

/// Parses one YAML document into a value and its span index. Syntax errors
/// and duplicate keys end the file's reading: nothing after them is
/// reliable.
fn parse_document(file: &Path, text: &str) -> Result<(Value, SpanIndex), Vec<ConfigError>> {
    let spans = SpanIndex::build(text).map_err(|e| {
        vec![ConfigError::new::<&str>(
            file,
            e.pos.within(text),
            &[],
            e.message,
        )]
    })?;
    if !spans.duplicates().is_empty() {
        return Err(spans
            .duplicates()
            .iter()
            .map(|d| {
                let key = d.path.last().map(String::as_str).unwrap_or_default();
                let message = format!(
                    "`{key}` is written twice in this mapping (first at line {}, column {})",
                    d.first.line, d.first.column
                );
                ConfigError::new(file, d.second, &d.path, message)
            })
            .collect());
    }
    // yaml-rust2 and libyaml (serde_yaml) may disagree on odd corners; the
    // value is what counts, so its own error is reported as a last resort.
    let value = serde_yaml::from_str::<Value>(text).map_err(|e| {
        let pos = e.location().map_or(Pos::START, |l| {
            Pos {
                line: l.line().max(1),
                column: l.column().max(1),
            }
            .within(text)
        });
        vec![ConfigError::new::<&str>(file, pos, &[], e.to_string())]
    })?;
    Ok((value, spans))
}

/// Reads the main file's value into a [`Config`]; `None` when any piece
/// failed (the errors are in `errors`).
fn read_config(
    root: Value,
    sources: &mut Sources,
    base_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<Config> {
    let main_file = sources.files[0].file.clone();
    let mut reader = Reader {
        file: &main_file,
        spans: &sources.files[0].spans,
        errors,
    };
    let mut root = match root {
        Value::Mapping(map) => map,
        // An empty file: let serde name the first missing field.
        Value::Null => Mapping::new(),
        _ => {
            reader.error::<&str>(
                &[],
                "a config is a mapping of settings (version, listen, apis, ...)",
            );
            return None;
        }
    };
    // The lists whose items are read one by one are taken out; what is left
    // is read as one struct (their fields all have defaults).
    let clients = root.remove("clients");
    let include = root.remove("include");
    let policies = root.remove("policies");
    let apply = root.remove("apply");
    let apis = root.remove("apis");

    let config = reader.peel::<Config>(&[], Value::Mapping(root));
    let clients: Option<Vec<ClientConfig>> =
        reader.items(&["clients"], clients, |r, path, v| r.peel(path, v));
    let include: Option<Vec<String>> = match include {
        Some(v) => reader.peel(&["include".to_string()], v),
        None => Some(Vec::new()),
    };
    // Inline policies are registered before any included file is read (a
    // name an included file repeats is reported in that file), even those
    // that failed to parse.
    if let Some(Value::Mapping(map)) = &policies {
        for name in map.keys().filter_map(scalar_string) {
            let path = vec!["policies".to_string(), name.clone()];
            sources
                .policies
                .insert(name, PolicyOrigin { source: 0, path });
        }
    }
    let policies = reader.policies(policies);
    let apply = reader.policy_refs(&["apply".to_string()], apply);
    let apis: Option<Vec<ApiConfig>> = reader.items(&["apis"], apis, |r, path, v| r.api(path, v));

    let mut all_policies: BTreeMap<String, PolicyDef> = policies.into_iter().flatten().collect();
    if let Some(globs) = &include {
        read_includes(globs, sources, base_dir, &mut all_policies, errors);
    }

    let mut config = config?;
    config.clients = clients.unwrap_or_default();
    config.include = include.unwrap_or_default();
    config.apply = apply.unwrap_or_default();
    config.apis = apis.unwrap_or_default();
    config.policies = all_policies;
    Some(config)
}

/// Reads the policy files `include:` names into `policies`, registering
/// each file in `sources`.
fn read_includes(
    globs: &[String],
    sources: &mut Sources,
    base_dir: &Path,
    policies: &mut BTreeMap<String, PolicyDef>,
    errors: &mut Vec<ConfigError>,
) {
    // `sources` grows below, so where each `include` entry was written is
    // looked up first.
    let main_file = sources.files[0].file.clone();
    let main_canonical = main_file.canonicalize().ok();
    let entries: Vec<(Vec<String>, Pos)> = (0..globs.len())
        .map(|i| {
            let path = vec!["include".to_string(), i.to_string()];
            let pos = sources.files[0].spans.locate(&path);
            (path, pos)
        })
        .collect();
    let include_error = |errors: &mut Vec<ConfigError>, i: usize, message: String| {
        let (path, pos) = &entries[i];
        errors.push(ConfigError::new(&main_file, *pos, path, message));
    };
    let mut seen: Vec<PathBuf> = Vec::new();
    for (i, pattern) in globs.iter().enumerate() {
        // The directory is taken literally; only the written pattern is a glob.
        let dir = glob::Pattern::escape(&base_dir.to_string_lossy());
        let full = if dir.is_empty() || Path::new(pattern).is_absolute() {
            pattern.clone()
        } else {
            format!("{dir}/{pattern}")
        };
        let mut files = Vec::new();
        match glob::glob(&full) {
            Err(e) => {
                include_error(errors, i, format!("`{pattern}` is not a valid glob: {e}"));
                continue;
            }
            Ok(paths) => {
                for entry in paths {
                    match entry {
                        Ok(path) if path.is_file() => files.push(path),
                        Ok(_) => {}
                        Err(e) => include_error(
                            errors,
                            i,
                            format!("cannot read a match of `{pattern}`: {e}"),
                        ),
                    }
                }
            }
        }
        if files.is_empty() {
            include_error(errors, i, format!("`{pattern}` matches no file"));
            continue;
        }
        files.sort();
        for path in files {
            // A file matched by two globs is read once, and the config
            // itself is never read as a policy file.
            let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
            if seen.contains(&canonical) || main_canonical.as_ref() == Some(&canonical) {
                continue;
            }
            seen.push(canonical);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    include_error(errors, i, format!("cannot read `{}`: {e}", path.display()));
                    continue;
                }
            };
            read_policy_file(&path, &text, sources, policies, errors);
        }
    }
}

/// Reads one included file: a mapping of policy name -> definition.
fn read_policy_file(
    path: &Path,
    text: &str,
    sources: &mut Sources,
    policies: &mut BTreeMap<String, PolicyDef>,
    errors: &mut Vec<ConfigError>,
) {
    let (value, spans) = match parse_document(path, text) {
        Ok(parsed) => parsed,
        Err(errs) => {
            errors.extend(errs);
            return;
        }
    };
    let source = sources.files.len();
    let defs = {
        let mut reader = Reader {
            file: path,
            spans: &spans,
            errors,
        };
        match value {
            Value::Mapping(map) => {
                let names: Vec<String> = map.keys().filter_map(scalar_string).collect();
                let defs = reader.policy_map(&[], map);
                let read: Vec<&String> = defs.iter().flatten().map(|(n, _)| n).collect();
                for name in names {
                    if !read.contains(&&name) {
                        sources.unreadable.insert(name);
                    }
                }
                defs
            }
            // An empty file defines nothing; that is not a mistake.
            Value::Null => Some(Vec::new()),
            _ => {
                reader.error::<&str>(
                    &[],
                    "a policy file is a mapping of policy name -> definition",
                );
                None
            }
        }
    };
    for (name, def) in defs.unwrap_or_default() {
        if let Some(first) = sources.policies.get(&name) {
            let first_file = &sources.files[first.source];
            let first_pos = first_file.spans.locate(&first.path);
            let message = format!(
                "policy `{name}` is already defined at {}:{}:{}",
                first_file.file.display(),
                first_pos.line,
                first_pos.column
            );
            let at = [name.clone()];
            errors.push(ConfigError::new(path, spans.locate(&at), &at, message));
            continue;
        }
        sources.policies.insert(
            name.clone(),
            PolicyOrigin {
                source,
                path: vec![name.clone()],
            },
        );
        policies.insert(name, def);
    }
    sources.files.push(Source {
        file: path.to_path_buf(),
        spans,
    });
}

/// Reads pieces of one file, recording each mistake with its position.
struct Reader<'a> {
    file: &'a Path,
    spans: &'a SpanIndex,
    errors: &'a mut Vec<ConfigError>,
}

impl Reader<'_> {
    fn error<S: AsRef<str>>(&mut self, path: &[S], message: impl Into<String>) {
        let pos = self.spans.locate(path);
        self.errors
            .push(ConfigError::new(self.file, pos, path, message));
    }

    /// Deserializes `value` (written at `base`) as a `T`, reporting every
    /// independent mistake in it. serde stops at the first error, so the
    /// key that failed is deleted and the rest read again, until it reads
    /// or nothing more can be deleted. `None` if nothing could be read.
    fn peel<T: DeserializeOwned>(&mut self, base: &[String], mut value: Value) -> Option<T> {
        // Keys deleted so far, relative to `value`.
        let mut deleted: Vec<Vec<String>> = Vec::new();
        loop {
            let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                // What is left reads: kept, with the failed keys at their
                // defaults, so later checks see the rest.
                Ok(t) => return Some(t),
                Err(err) => err,
            };
            let segments: Vec<Segment> = err.path().iter().cloned().collect();
            let message = err.into_inner().to_string();
            let mut path = segment_strings(&segments);
            // serde_path_to_error names the unknown key itself (`zz`, not
            // its mapping); make sure of it, the user must fix that key.
            if let Some(key) = quoted_after(&message, "unknown field `") {
                if path.last().map(String::as_str) != Some(key) {
                    path.push(key.to_string());
                }
            }
            // A required field deleted by an earlier round was already
            // reported with its own mistake.
            let echo = quoted_after(&message, "missing field `").is_some_and(|field| {
                let mut missing = path.clone();
                missing.push(field.to_string());
                deleted.contains(&missing)
            });
            if !echo {
                let mut full = base.to_vec();
                full.extend(path.iter().cloned());
                self.error(&full, message);
            }
            match delete_deepest_key(&mut value, &segments) {
                Some(key_path) => deleted.push(key_path),
                None => return None,
            }
        }
    }

    /// Reads an optional sequence item by item (an absent or empty `key:`
    /// is an empty list); the items that failed are left out.
    fn items<T>(
        &mut self,
        path: &[&str],
        value: Option<Value>,
        mut read: impl FnMut(&mut Self, &[String], Value) -> Option<T>,
    ) -> Option<Vec<T>> {
        let base: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        let items = match value {
            None | Some(Value::Null) => return Some(Vec::new()),
            Some(Value::Sequence(items)) => items,
            Some(other) => {
                self.error(&base, format!("expected a list, found {}", kind_of(&other)));
                return None;
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let mut item_path = base.clone();
            item_path.push(i.to_string());
            out.extend(read(self, &item_path, item));
        }
        Some(out)
    }

    /// The `policies:` mapping of the main file.
    fn policies(&mut self, value: Option<Value>) -> Option<Vec<(String, PolicyDef)>> {
        let base = ["policies".to_string()];
        match value {
            None | Some(Value::Null) => Some(Vec::new()),
            Some(Value::Mapping(map)) => self.policy_map(&base, map),
            Some(other) => {
                self.error(
                    &base,
                    format!(
                        "expected a mapping of policy name -> definition, found {}",
                        kind_of(&other)
                    ),
                );
                None
            }
        }
    }

    /// A mapping of policy name -> definition, written at `base`.
    fn policy_map(&mut self, base: &[String], map: Mapping) -> Option<Vec<(String, PolicyDef)>> {
        let mut out = Vec::with_capacity(map.len());
        for (key, def) in map {
            let Some(name) = scalar_string(&key) else {
                self.error(base, "a policy name must be a string");
                continue;
            };
            let mut path = base.to_vec();
            path.push(name.clone());
            if let Some(def) = self.policy_def(&path, def) {
                out.push((name, def));
            }
        }
        Some(out)
    }

    fn policy_def(&mut self, path: &[String], value: Value) -> Option<PolicyDef> {
        PolicyDef::from_value(value)
            .map_err(|e| {
                let mut full = path.to_vec();
                full.extend(e.path);
                self.error(&full, e.message);
            })
            .ok()
    }

    /// An `apply` list: each entry a policy name or an inline definition.
    fn policy_refs(&mut self, path: &[String], value: Option<Value>) -> Option<Vec<PolicyRef>> {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        self.items(&path, value, |r, path, v| match v {
            Value::String(name) => Some(PolicyRef::Name(name)),
            other => r.policy_def(path, other).map(PolicyRef::Inline),
        })
    }

    /// One API: its own fields, then each operation on its own.
    fn api(&mut self, path: &[String], value: Value) -> Option<ApiConfig> {
        let Value::Mapping(mut map) = value else {
            self.error(
                path,
                format!("an API is a mapping, found {}", kind_of(&value)),
            );
            return None;
        };
        let apply = map.remove("apply");
        // Left out when absent, so serde reports `operations` as missing.
        let operations = map
            .get_mut("operations")
            .map(|ops| std::mem::replace(ops, Value::Sequence(Vec::new())));
        let api = self.peel::<ApiConfig>(path, Value::Mapping(map));
        let apply = self.policy_refs(&child(path, "apply"), apply);
        let ops_path = child(path, "operations");
        let ops_path: Vec<&str> = ops_path.iter().map(String::as_str).collect();
        let operations = match operations {
            None => None,
            Some(ops) => self.items(&ops_path, Some(ops), |r, path, v| r.operation(path, v)),
        };
        let mut api = api?;
        api.apply = apply.unwrap_or_default();
        api.operations = operations?;
        Some(api)
    }

    fn operation(&mut self, path: &[String], value: Value) -> Option<OperationConfig> {
        let Value::Mapping(mut map) = value else {
            self.error(
                path,
                format!("an operation is a mapping, found {}", kind_of(&value)),
            );
            return None;
        };
        let apply = map.remove("apply");
        let op = self.peel::<OperationConfig>(path, Value::Mapping(map));
        let apply = self.policy_refs(&child(path, "apply"), apply);
        let mut op = op?;
        op.apply = apply.unwrap_or_default();
        Some(op)
    }
}

fn child(path: &[String], key: &str) -> Vec<String> {
    let mut out = path.to_vec();
    out.push(key.to_string());
    out
}

/// The text between `prefix` and the next backtick, if `message` starts
/// with `prefix` (serde's "unknown field `x`" and "missing field `x`").
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

/// A mapping key as the path segment serde_path_to_error gives it.
fn scalar_string(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Deletes the deepest mapping key along `segments` (the path of an
/// error) and returns its path. Deleting a key never renumbers anything,
/// unlike deleting a sequence item, so later errors keep their paths.
fn delete_deepest_key(value: &mut Value, segments: &[Segment]) -> Option<Vec<String>> {
    // The last key segment that can be reached through the value.
    let mut last_key = None;
    {
        let mut node = &*value;
        for (i, seg) in segments.iter().enumerate() {
            let next = match (seg, node) {
                (Segment::Map { key }, Value::Mapping(map)) => {
                    last_key = Some(i);
                    find_key(map, key).and_then(|k| map.get(k))
                }
                (Segment::Seq { index }, Value::Sequence(items)) => items.get(*index),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
    }
    let target = last_key?;
    let mut node = value;
    for seg in &segments[..target] {
        node = match (seg, node) {
            (Segment::Map { key }, Value::Mapping(map)) => {
                let k = find_key(map, key)?.clone();
                map.get_mut(&k)?
            }
            (Segment::Seq { index }, Value::Sequence(items)) => items.get_mut(*index)?,
            _ => return None,
        };
    }
    let (Segment::Map { key }, Value::Mapping(map)) = (&segments[target], node) else {
        return None;
    };
    let k = find_key(map, key)?.clone();
    map.remove(&k)?;
    Some(segment_strings(&segments[..=target]))
}

fn find_key<'m>(map: &'m Mapping, key: &str) -> Option<&'m Value> {
    map.keys()
        .find(|k| scalar_string(k).as_deref() == Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(yaml: &str) -> Vec<String> {
        match load_str(Path::new("t.yaml"), yaml) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    /// Found by the config_loader fuzz target: these errors were placed on
    /// the line after the last of a file without a final newline.
    #[test]
    fn errors_at_the_end_of_a_file_without_a_final_newline_point_into_it() {
        assert_eq!(
            errors_of("version: 1\nlisten"),
            ["t.yaml:2:7: simple key expected"]
        );
        assert_eq!(
            errors_of("!rratmeti"),
            ["t.yaml:1:10: a config is a mapping of settings (version, listen, apis, ...)"]
        );
    }

    /// The example of DESIGN §3, with its included policy file.
    const DESIGN_EXAMPLE: &str = "\
version: 1
listen: 127.0.0.1:8080
tls: { cert_file: certs/gw.pem, key_file: certs/gw.key }
admin: { listen: 127.0.0.1:9901, token_env: TOLLGATE_ADMIN_TOKEN }
trusted_proxies: [10.0.0.0/8]
limits:
  max_body: 1MiB
  max_header_bytes: 16KiB
  header_read_timeout: 10s
  upstream_timeout: 30s
  max_connections: 10000
state:
  store: memory
  redis_url: redis://127.0.0.1:6379
  on_store_error: fail_closed
roles: [admin, reader, agent]
clients:
  - id: hr-portal
    roles: [reader]
    api_keys:
      - sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
      - env: HR_PORTAL_KEY
jwt:
  issuer: https://idp.example.com
  audience: tollgate
  algorithms: [RS256]
  public_key_file: keys/idp.pem
  roles_claim: roles
include: [policies/*.yaml]
policies:
  key-required: { type: auth, methods: [api_key, jwt] }
apply: [key-required]
apis:
  - name: employee-directory
    title: Employee Directory
    version: 1.0.0
    base_path: /employees
    upstream: http://127.0.0.1:9090
    apply: [per-client-rate]
    operations:
      - id: getEmployee
        method: GET
        path: /{employeeId}
        upstream: http://127.0.0.1:9090/workflows/get-employee
        summary: Look up one employee
        apply: [{ type: roles, allow: [reader, admin] }]
        response_schema: { type: object, required: [id, name] }
      - id: health
        method: GET
        path: /health
        skip: [key-required]
";

    #[test]
    fn the_design_example_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        std::fs::write(
            dir.path().join("policies/limits.yaml"),
            "per-client-rate: { type: rate_limit, limit: 5, window: 1m, for_roles: [reader] }\n",
        )
        .expect("write");
        let file = dir.path().join("tollgate.yaml");
        std::fs::write(&file, DESIGN_EXAMPLE).expect("write");
        let loaded = load_file(&file).unwrap_or_else(|errors| panic!("{errors:#?}"));
        assert_eq!(loaded.base_dir, dir.path());
        assert_eq!(loaded.config.policies.len(), 2);
        assert_eq!(loaded.config.apis[0].operations.len(), 2);
        assert!(matches!(
            loaded.config.apis[0].operations[0].apply[0],
            PolicyRef::Inline(_)
        ));
    }

    #[test]
    fn an_empty_file_lacks_version() {
        assert_eq!(errors_of(""), ["t.yaml:1:1: missing field `version`"]);
        assert_eq!(
            errors_of("# nothing yet\n"),
            ["t.yaml:1:1: missing field `version`"]
        );
    }

    #[test]
    fn a_config_that_is_not_a_mapping_is_one_error() {
        assert_eq!(
            errors_of("- version: 1\n"),
            ["t.yaml:1:1: a config is a mapping of settings (version, listen, apis, ...)"]
        );
    }

    #[test]
    fn a_field_deleted_for_its_own_error_is_not_reported_missing_too() {
        // `cert_file` is required: its wrong type is one error, not two.
        assert_eq!(
            errors_of("version: 1\nlisten: x\ntls: { cert_file: [a], key_file: k }\n"),
            ["t.yaml:3:8: tls.cert_file: invalid type: sequence, expected a string"]
        );
    }

    #[test]
    fn every_item_of_a_list_is_read_on_its_own() {
        let yaml = "\
version: 1
listen: x
clients:
  - id: a
    role: [x]
  - id: 7
  - {}
apis:
  - name: one
    operations: nope
  - title: two
    operations: []
";
        assert_eq!(
            errors_of(yaml),
            [
                "t.yaml:5:5: clients[0].role: unknown field `role`, expected one of `id`, `roles`, `api_keys`",
                "t.yaml:6:5: clients[1].id: invalid type: integer `7`, expected a string",
                "t.yaml:7:5: clients[2]: missing field `id`",
                "t.yaml:10:5: apis[0].operations: expected a list, found a string",
                "t.yaml:11:5: apis[1]: missing field `name`",
            ]
        );
    }

    #[test]
    fn a_policy_that_is_not_a_mapping_is_reported_at_its_name() {
        assert_eq!(
            errors_of("version: 1\nlisten: x\npolicies:\n  p: auth\napply: [7]\n"),
            [
                "t.yaml:4:3: policies.p: a policy is a mapping with a `type:` key (or, in `apply`, a policy name)",
                "t.yaml:5:9: apply[0]: a policy is a mapping with a `type:` key (or, in `apply`, a policy name)",
            ]
        );
    }

    #[test]
    fn the_config_itself_is_not_read_as_a_policy_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gw.yaml");
        std::fs::write(&file, "version: 1\nlisten: x\ninclude: ['*.yaml']\n").expect("write");
        std::fs::write(dir.path().join("p.yaml"), "p: { type: ip, allow: [] }\n").expect("write");
        let loaded = load_file(&file).unwrap_or_else(|errors| panic!("{errors:#?}"));
        assert!(loaded.config.policies.contains_key("p"));
    }

    #[test]
    fn an_unreadable_config_is_one_error_at_its_start() {
        let errors = load_file(Path::new("/nonexistent/tollgate.yaml")).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0]
            .to_string()
            .starts_with("/nonexistent/tollgate.yaml:1:1: cannot read the config:"));
    }

    #[test]
    fn a_later_finding_around_a_reported_place_is_an_echo() {
        assert!(nested("apis[0]", "apis[0].operations[1]"));
        assert!(nested("apis[0].operations[1].method", "apis[0]"));
        assert!(nested("state.url", "state.url"));
        assert!(nested("", "listen"));
        assert!(!nested("apis[0]", "apis[01]"));
        assert!(!nested("apis[1]", "apis[0].operations[1]"));
        assert!(!nested("state", "state_ttl"));
        assert_eq!(place("state.redis_url"), "state");
        assert_eq!(
            place("apis[0].operations[1].method"),
            "apis[0].operations[1]"
        );
        assert_eq!(place("apply[2]"), "apply[2]");
        assert_eq!(place("listen"), "listen");
    }

    #[test]
    fn mistakes_of_every_pass_are_reported_together_and_echoes_dropped() {
        // A bad field of the state settings (read, then defaulted) and an
        // unknown policy (validation) are both reported; validation's
        // findings about the defaulted `state` would echo the first and
        // are not.
        let errors = errors_of(
            "version: 1\nlisten: 127.0.0.1:1\nstate: {store: redis, redis_url: [5]}\napply: [nope]\napis: []\n",
        );
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].starts_with("t.yaml:3:23: state.redis_url: invalid type"),
            "{errors:#?}"
        );
        assert!(
            errors[1].starts_with("t.yaml:4:9: apply[0]: no policy is named `nope`"),
            "{errors:#?}"
        );
    }

    #[test]
    fn the_deepest_key_of_an_error_path_is_deleted() {
        let mut value: Value =
            serde_yaml::from_str("a:\n  - { b: 1, c: 2 }\nd: 3\n").expect("yaml");
        let segments = [
            Segment::Map { key: "a".into() },
            Segment::Seq { index: 0 },
            Segment::Map { key: "c".into() },
        ];
        assert_eq!(
            delete_deepest_key(&mut value, &segments),
            Some(vec!["a".to_string(), "0".to_string(), "c".to_string()])
        );
        let left: Value = serde_yaml::from_str("a:\n  - { b: 1 }\nd: 3\n").expect("yaml");
        assert_eq!(value, left);
        // Nothing to delete at the root.
        assert_eq!(delete_deepest_key(&mut value, &[]), None);
    }
}
