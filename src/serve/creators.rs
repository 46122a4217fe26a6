//! The creators a server speaks as: one persona per artifact, chosen per request by name.
//!
//! Owns where the artifacts come from (`--artifact FILE`, repeatable, or `--artifacts DIR`),
//! selecting one by a request's `model` or `creator`, and reloading: a replaced artifact file
//! (an atomic rename gives it a new identity) or SIGHUP loads it again, and the new persona is
//! swapped in only once it loaded and verified. A request holds its own `Arc` of the persona it
//! started with, so requests in flight finish on the old one. Loading itself is a function given
//! by the caller, so the registry is tested without model files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use axum::http::StatusCode;

use super::errors::ApiError;
use crate::answer::Persona;

/// Loads one artifact file into a persona.
pub type Loader = Box<dyn Fn(&Path) -> Result<Persona> + Send + Sync>;

/// Where the artifacts come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// These files.
    Files(Vec<PathBuf>),
    /// Every `*.bin` file in this directory.
    Dir(PathBuf),
    /// Personas given in memory (tests); never reloaded.
    Fixed,
}

/// What identifies a file's current contents without reading it: a replaced file (renamed over)
/// has a new inode, an edited one a new length or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

struct Entry {
    persona: Arc<Persona>,
    path: Option<PathBuf>,
    stamp: Option<Stamp>,
}

/// The creators served, by the name in their artifact.
pub struct Creators {
    entries: RwLock<BTreeMap<String, Entry>>,
    source: Source,
    loader: Option<Loader>,
    /// Files that failed to load or were refused, as they were then: tried again only once they
    /// change (or on SIGHUP), so a broken file is reported once, not at every check.
    refused: std::sync::Mutex<BTreeMap<PathBuf, Option<Stamp>>>,
}

impl Creators {
    /// Personas already loaded, never reloaded.
    pub fn fixed(personas: Vec<Persona>) -> Result<Self> {
        let mut entries = BTreeMap::new();
        for persona in personas {
            insert_unique(
                &mut entries,
                Entry {
                    persona: Arc::new(persona),
                    path: None,
                    stamp: None,
                },
            )?;
        }
        Ok(Creators {
            entries: RwLock::new(entries),
            source: Source::Fixed,
            loader: None,
            refused: Default::default(),
        })
    }

    /// Loads every artifact of `source` with `loader`; any failure stops the start-up with the
    /// file named.
    pub fn load(source: Source, loader: Loader) -> Result<Self> {
        let mut entries = BTreeMap::new();
        let paths = source_paths(&source)?;
        if paths.is_empty() {
            bail!("no artifacts to serve: the directory has no `*.bin` file; compile one with `persona compile`");
        }
        for path in paths {
            let before = stamp(&path);
            let persona =
                loader(&path).with_context(|| format!("loading the artifact `{}`", path.display()))?;
            insert_unique(
                &mut entries,
                Entry {
                    persona: Arc::new(persona),
                    path: Some(path),
                    stamp: before,
                },
            )?;
        }
        Ok(Creators {
            entries: RwLock::new(entries),
            source,
            loader: Some(loader),
            refused: Default::default(),
        })
    }

    /// The persona a request names; with no name, the only one served.
    pub fn select(&self, name: Option<&str>) -> Result<Arc<Persona>, ApiError> {
        let entries = self
            .entries
            .read()
            .map_err(|_| ApiError::from_pipeline(anyhow::anyhow!("creator table poisoned")))?;
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        let Some(name) = name else {
            return match entries.values().next() {
                Some(e) if entries.len() == 1 => Ok(e.persona.clone()),
                _ => Err(ApiError::bad_request(format!(
                    "this server speaks as several creators; name one ({})",
                    names(&entries)
                ))),
            };
        };
        entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, e)| e.persona.clone())
            .ok_or_else(|| {
                let mut e = ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    format!(
                        "the model `{name}` does not exist; this server has: {}",
                        names(&entries)
                    ),
                );
                e.code = Some("model_not_found");
                e
            })
    }

    /// Every persona served, by name.
    pub fn all(&self) -> Vec<Arc<Persona>> {
        self.entries
            .read()
            .map(|e| e.values().map(|e| e.persona.clone()).collect())
            .unwrap_or_default()
    }

    /// Loads the artifacts whose file changed (all of them when `force`), and any new file in
    /// the directory; drops creators whose directory file is gone. A file that fails to load
    /// keeps the old persona and is reported. Returns one line per change, for the log.
    pub fn reload(&self, force: bool) -> Vec<String> {
        let Some(loader) = &self.loader else {
            return Vec::new();
        };
        let paths = match source_paths(&self.source) {
            Ok(p) => p,
            Err(e) => return vec![format!("reload: {e:#}")],
        };
        let known: Vec<(String, Option<PathBuf>, Option<Stamp>)> = match self.entries.read() {
            Ok(e) => e
                .iter()
                .map(|(n, e)| (n.clone(), e.path.clone(), e.stamp))
                .collect(),
            Err(_) => return vec!["reload: creator table poisoned".into()],
        };
        let mut log = Vec::new();
        for path in &paths {
            let now = stamp(path);
            let current = known
                .iter()
                .find(|(_, p, _)| p.as_deref() == Some(path.as_path()));
            let unchanged = current.is_some_and(|(_, _, s)| *s == now)
                || self.refused.lock().is_ok_and(|r| r.get(path) == Some(&now));
            if !force && unchanged {
                continue;
            }
            if let Ok(mut r) = self.refused.lock() {
                r.insert(path.clone(), now);
            }
            match loader(path) {
                Ok(persona) => {
                    let name = persona.creator().to_string();
                    let Ok(mut entries) = self.entries.write() else {
                        return log;
                    };
                    // Another file already serving this name (in any case) keeps it.
                    let taken = entries
                        .iter()
                        .find(|(n, e)| {
                            n.eq_ignore_ascii_case(&name) && e.path.as_deref() != Some(path.as_path())
                        })
                        .and_then(|(_, e)| e.path.clone());
                    if let Some(other) = taken {
                        log.push(format!(
                            "reload: `{}` speaks as {name}, already served from `{}`; not loaded",
                            path.display(),
                            other.display()
                        ));
                        continue;
                    }
                    if let Some(old) = current.filter(|(n, _, _)| *n != name) {
                        entries.remove(&old.0);
                        log.push(format!(
                            "reload: `{}` now speaks as {name}, no longer as {}",
                            path.display(),
                            old.0
                        ));
                    }
                    entries.insert(
                        name.clone(),
                        Entry {
                            persona: Arc::new(persona),
                            path: Some(path.clone()),
                            stamp: now,
                        },
                    );
                    if let Ok(mut r) = self.refused.lock() {
                        r.remove(path);
                    }
                    log.push(format!("reload: {name} from `{}`", path.display()));
                }
                Err(e) => log.push(format!(
                    "reload: `{}` failed, the previous version keeps serving: {e:#}",
                    path.display()
                )),
            }
        }
        if let (Source::Dir(_), Ok(mut entries)) = (&self.source, self.entries.write()) {
            entries.retain(|name, e| {
                let keep = e.path.as_ref().is_none_or(|p| paths.contains(p));
                if !keep {
                    log.push(format!("reload: {name} removed (its artifact is gone)"));
                }
                keep
            });
        }
        log
    }
}

fn names(entries: &BTreeMap<String, Entry>) -> String {
    entries.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn insert_unique(entries: &mut BTreeMap<String, Entry>, entry: Entry) -> Result<()> {
    let name = entry.persona.creator().to_string();
    if entries.keys().any(|n| n.eq_ignore_ascii_case(&name)) {
        bail!("two artifacts speak as `{name}`; serve each creator from one artifact");
    }
    entries.insert(name, entry);
    Ok(())
}

fn source_paths(source: &Source) -> Result<Vec<PathBuf>> {
    match source {
        Source::Files(files) => Ok(files.clone()),
        Source::Fixed => Ok(Vec::new()),
        Source::Dir(dir) => {
            let mut paths = Vec::new();
            for entry in std::fs::read_dir(dir)
                .with_context(|| format!("reading the artifacts directory `{}`", dir.display()))?
            {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "bin") && path.is_file() {
                    paths.push(path);
                }
            }
            paths.sort();
            Ok(paths)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::testing;

    /// A loader that reads the creator's name from the file, as a stand-in for an artifact.
    fn loader() -> Loader {
        Box::new(|path| {
            let name = std::fs::read_to_string(path)?;
            anyhow::ensure!(!name.trim().is_empty(), "empty artifact");
            let mut p = testing::persona();
            p.artifact.settings.creator.name = name.trim().to_string();
            Ok(p)
        })
    }

    /// Replaces `path` the way a deploy does: a new file renamed over the old one.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn a_directory_is_served_and_reloaded_as_its_files_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wren.bin"), "Wren").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not an artifact").unwrap();
        let creators = Creators::load(Source::Dir(dir.path().into()), loader()).unwrap();
        let before = creators.select(None).unwrap();
        assert_eq!(before.creator(), "Wren");
        assert!(
            creators.reload(false).is_empty(),
            "nothing changed, nothing reloaded"
        );

        replace(&dir.path().join("wren.bin"), "Wren");
        std::fs::write(dir.path().join("ivy.bin"), "Ivy").unwrap();
        let log = creators.reload(false);
        assert_eq!(log.len(), 2, "{log:?}");
        let after = creators.select(Some("wren")).unwrap();
        assert!(
            !Arc::ptr_eq(&before, &after),
            "the replaced file was loaded again"
        );
        assert_eq!(
            before.creator(),
            "Wren",
            "a request in flight keeps the persona it started with"
        );
        assert_eq!(creators.select(Some("Ivy")).unwrap().creator(), "Ivy");
        assert_eq!(
            creators.select(None).err().unwrap().status,
            StatusCode::BAD_REQUEST
        );

        replace(&dir.path().join("ivy.bin"), "");
        let log = creators.reload(false);
        assert!(
            log[0].contains("failed, the previous version keeps serving"),
            "{log:?}"
        );
        assert_eq!(creators.select(Some("Ivy")).unwrap().creator(), "Ivy");
        assert!(
            creators.reload(false).is_empty(),
            "a broken file is reported once, not at every check"
        );

        std::fs::write(dir.path().join("copy.bin"), "wren").unwrap();
        let log = creators.reload(false);
        assert!(log[0].contains("already served from"), "{log:?}");
        assert_eq!(
            creators.select(Some("Wren")).unwrap().creator(),
            "Wren",
            "the first file keeps the name"
        );
        std::fs::remove_file(dir.path().join("copy.bin")).unwrap();

        std::fs::remove_file(dir.path().join("ivy.bin")).unwrap();
        creators.reload(false);
        assert_eq!(
            creators.select(Some("Ivy")).err().unwrap().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(creators.all().len(), 1);
        assert_eq!(creators.reload(true).len(), 1, "SIGHUP reloads every file");
    }

    #[test]
    fn two_artifacts_of_one_creator_or_an_empty_directory_stop_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let err = Creators::load(Source::Dir(dir.path().into()), loader())
            .err()
            .unwrap();
        assert!(err.to_string().contains("no `*.bin` file"), "{err}");
        let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
        std::fs::write(&a, "Wren").unwrap();
        std::fs::write(&b, "wren").unwrap();
        let err = Creators::load(Source::Files(vec![a, b]), loader()).err().unwrap();
        assert!(format!("{err:#}").contains("two artifacts speak as"), "{err:#}");
    }
}
