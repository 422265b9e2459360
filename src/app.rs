//! What the commands do, as library functions (`main.rs` only parses
//! arguments): load and compile a config, serve it with signal handling
//! and reload, and make API keys.

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clock::SystemClock;
use crate::config::{self, ConfigError};
use crate::gateway::{Deps, Gateway};
use crate::server::{Server, SharedGateway};

/// `tollgate.yaml` if it exists, else `config.example.yaml`.
pub fn default_config_path() -> PathBuf {
    let own = PathBuf::from("tollgate.yaml");
    if own.exists() {
        own
    } else {
        PathBuf::from("config.example.yaml")
    }
}

/// Loads and compiles a config file with fresh dependencies.
pub fn load(path: &Path) -> Result<(Gateway, Deps), Vec<ConfigError>> {
    let loaded = config::load_file(path)?;
    let deps = Deps::for_config(&loaded, SystemClock::shared())?;
    let gateway = Gateway::compile(loaded, &deps)?;
    Ok((gateway, deps))
}

/// Re-reads `path` and swaps the new gateway in; the old one keeps
/// serving if the new config has errors. Counters live in `deps`, so they
/// survive. Returns a one-line summary.
pub fn reload(
    path: &Path,
    deps: &Deps,
    shared: &SharedGateway,
) -> Result<String, Vec<ConfigError>> {
    let loaded = config::load_file(path)?;
    let gateway = Gateway::compile(loaded, deps)?;
    let old = shared.load();
    let mut summary = summarize(&gateway);
    if gateway.settings.listen != old.settings.listen
        || gateway.settings.tls.is_some() != old.settings.tls.is_some()
    {
        summary.push_str("; listener changes need a restart");
    }
    shared.store(Arc::new(gateway));
    Ok(summary)
}

pub fn summarize(gateway: &Gateway) -> String {
    let apis = gateway.loaded.config.apis.len();
    format!(
        "{} API{}, {} operation{}, {} named polic{}",
        apis,
        if apis == 1 { "" } else { "s" },
        gateway.operations.len(),
        if gateway.operations.len() == 1 {
            ""
        } else {
            "s"
        },
        gateway.loaded.config.policies.len(),
        if gateway.loaded.config.policies.len() == 1 {
            "y"
        } else {
            "ies"
        },
    )
}

/// Serves `gateway` until SIGTERM or SIGINT; SIGHUP reloads `path`.
pub async fn serve(path: PathBuf, gateway: Gateway, deps: Deps) -> Result<(), String> {
    let shared: SharedGateway = Arc::new(ArcSwap::from_pointee(gateway));
    let server = Server::bind(shared.clone()).await?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, config = %path.display(), "{}", summarize(&shared.load()));
    spawn_reload_on_sighup(path, deps, shared.clone());
    server.run(shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(unix)]
fn spawn_reload_on_sighup(path: PathBuf, deps: Deps, shared: SharedGateway) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload by signal is off");
            return;
        };
        while hup.recv().await.is_some() {
            match reload(&path, &deps, &shared) {
                Ok(summary) => tracing::info!("reloaded: {summary}"),
                Err(errors) => {
                    for e in &errors {
                        tracing::error!("{e}");
                    }
                    tracing::error!("reload refused; the previous config keeps serving");
                }
            }
        }
    });
}

#[cfg(not(unix))]
fn spawn_reload_on_sighup(_: PathBuf, _: Deps, _: SharedGateway) {}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down: draining in-flight requests");
}

/// A new API key: the secret (shown once), a non-secret id, and the SHA-256
/// the config stores instead of the key.
pub struct NewKey {
    pub key: String,
    pub id: String,
    pub sha256: String,
}

pub fn new_key() -> Result<NewKey, String> {
    let mut secret = [0u8; 24];
    let mut id = [0u8; 4];
    getrandom::getrandom(&mut secret).map_err(|e| format!("no randomness: {e}"))?;
    getrandom::getrandom(&mut id).map_err(|e| format!("no randomness: {e}"))?;
    let key = format!("tg_{}", hex::encode(secret));
    let sha256 = hex::encode(Sha256::digest(key.as_bytes()));
    Ok(NewKey {
        key,
        id: format!("k_{}", hex::encode(id)),
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keys_are_random_and_their_hash_matches() {
        let a = new_key().expect("key");
        let b = new_key().expect("key");
        assert_ne!(a.key, b.key);
        assert!(a.key.starts_with("tg_") && a.key.len() == 51);
        assert_eq!(a.sha256, hex::encode(Sha256::digest(a.key.as_bytes())));
        assert!(!a.key.contains(&a.id[2..]));
    }
}
