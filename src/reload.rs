//! Reloading: one config file re-read, compiled with the `Deps` that
//! outlive it, and swapped into the serving gateway, one reload at a time,
//! for every trigger (SIGHUP and `reload: watch` in `crate::app`,
//! `POST /admin/reload` in `crate::admin`). Counters live in the deps, so
//! they survive; a config with errors leaves the old gateway serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{self, ConfigError};
use crate::gateway::{Deps, Gateway};
use crate::server::SharedGateway;

/// What a successful reload did.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// APIs, operations and policies now serving.
    pub summary: String,
    /// Settings that changed but only take effect after a restart (the
    /// listeners are bound once): `listen`, `tls` on/off, `admin.listen`,
    /// `admin.token_env`.
    pub restart_needed: Vec<&'static str>,
}

impl Reloaded {
    /// The line the reload reports: the summary, and the settings that need a restart.
    pub fn message(&self) -> String {
        if self.restart_needed.is_empty() {
            self.summary.clone()
        } else {
            format!(
                "{}; changes to {} need a restart",
                self.summary,
                self.restart_needed.join(", ")
            )
        }
    }
}

/// Compiles the config at `path` with `deps` and swaps it in; on errors
/// the serving gateway stays.
fn swap_in(path: &Path, deps: &Deps, shared: &SharedGateway) -> Result<Reloaded, Vec<ConfigError>> {
    let gateway = Gateway::compile_all(config::read_file(path), deps)?;
    let old = shared.load();
    let (new_s, old_s) = (&gateway.settings, &old.settings);
    let mut restart_needed = Vec::new();
    if new_s.listen != old_s.listen {
        restart_needed.push("listen");
    }
    if new_s.tls.is_some() != old_s.tls.is_some() {
        restart_needed.push("tls");
    }
    if new_s.admin_listen != old_s.admin_listen {
        restart_needed.push("admin.listen");
    }
    if new_s.admin_token_env != old_s.admin_token_env {
        restart_needed.push("admin.token_env");
    }
    let summary = gateway.summary();
    shared.store(Arc::new(gateway));
    Ok(Reloaded {
        summary,
        restart_needed,
    })
}

/// Reloads one config file into the serving gateway, for every trigger
/// (SIGHUP, `POST /admin/reload`, `reload: watch`): one reload at a time,
/// each counted in `tollgate_config_reloads_total`.
pub struct Reloader {
    path: PathBuf,
    deps: Deps,
    shared: SharedGateway,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader of the config at `path` into `shared`, compiled with `deps`.
    pub fn new(path: PathBuf, deps: Deps, shared: SharedGateway) -> Arc<Reloader> {
        Arc::new(Reloader {
            path,
            deps,
            shared,
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }

    /// The config file reloaded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What outlives each reload (store, metrics, clock, caches).
    pub fn deps(&self) -> &Deps {
        &self.deps
    }

    /// The serving gateway a reload replaces.
    pub fn shared(&self) -> &SharedGateway {
        &self.shared
    }

    /// Re-reads the config; on errors the previous gateway keeps serving.
    pub async fn reload(self: &Arc<Self>) -> Result<Reloaded, Vec<ConfigError>> {
        let _turn = self.one_at_a_time.lock().await;
        let this = self.clone();
        // Reading files and compiling regexes and schemas blocks: keep it
        // off the threads that serve requests.
        let result =
            tokio::task::spawn_blocking(move || swap_in(&this.path, &this.deps, &this.shared))
                .await
                .unwrap_or_else(|e| {
                    Err(vec![ConfigError {
                        file: self.path.clone(),
                        line: 1,
                        column: 1,
                        path: String::new(),
                        message: format!("the reload failed: {e}"),
                    }])
                });
        self.deps.metrics.record_reload(result.is_ok());
        match &result {
            Ok(done) => {
                tracing::info!("reloaded: {}", done.message());
                // A new `jwks_url` is fetched now rather than by the first token.
                self.deps.jwks.prefetch();
            }
            Err(errors) => {
                for e in errors {
                    tracing::error!("{e}");
                }
                tracing::error!("reload refused; the previous config keeps serving");
            }
        }
        result
    }
}
