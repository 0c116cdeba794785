//! A read-only model of the workspace manifests: members, their settings and the internal
//! dependency graph, plus the publish order computed from it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use toml_edit::{DocumentMut, Item, Table};

/// One workspace member.
#[derive(Debug, Clone)]
pub struct Member {
    /// `package.name`.
    pub name: String,
    /// Absolute directory of the crate.
    pub dir: PathBuf,
    /// False if `publish = false` (or an empty registry list).
    pub publish: bool,
    /// `[lints] workspace = true`.
    pub workspace_lints: bool,
    /// `version.workspace = true`.
    pub workspace_version: bool,
    /// Names of other members this one needs at publish time (normal, build and
    /// versioned dev dependencies; path-only dev dependencies are stripped by cargo).
    pub internal_deps: BTreeSet<String>,
}

/// The workspace at a root directory.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Members in the order the root manifest lists them.
    pub members: Vec<Member>,
}

impl Workspace {
    /// Read `<root>/Cargo.toml` and every member manifest.
    pub fn load(root: &Path) -> Result<Workspace> {
        let root_doc = read_manifest(&root.join("Cargo.toml"))?;
        let ws = root_doc
            .get("workspace")
            .and_then(Item::as_table)
            .context("root Cargo.toml has no [workspace] table")?;
        let ws_deps = ws.get("dependencies").and_then(Item::as_table);
        let mut dirs = Vec::new();
        for entry in ws
            .get("members")
            .and_then(Item::as_array)
            .context("root Cargo.toml has no workspace.members array")?
        {
            let entry = entry
                .as_str()
                .context("workspace.members entries must be strings")?;
            if let Some(parent) = entry.strip_suffix("/*") {
                let mut found: Vec<PathBuf> = fs::read_dir(root.join(parent))
                    .with_context(|| format!("listing members under {parent}"))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.join("Cargo.toml").is_file())
                    .collect();
                found.sort();
                dirs.extend(found);
            } else if entry.contains(['*', '?', '[']) {
                bail!("workspace member pattern `{entry}` is not supported (use `dir/*`)");
            } else {
                dirs.push(root.join(entry));
            }
        }
        let mut members = Vec::new();
        for dir in dirs {
            members.push(read_member(&dir)?);
        }
        let names: BTreeSet<String> = members.iter().map(|m| m.name.clone()).collect();
        // Second pass: resolve dependency names now that all member names are known.
        for member in &mut members {
            let doc = read_manifest(&member.dir.join("Cargo.toml"))?;
            member.internal_deps = internal_deps(&doc, ws_deps, &names);
            member.internal_deps.remove(&member.name);
        }
        Ok(Workspace { members })
    }

    /// Publishable members.
    pub fn publishable(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.publish)
    }

    /// Publishable members in an order where every crate comes after the crates it
    /// depends on; ties keep the root manifest's member order.
    pub fn publish_order(&self) -> Result<Vec<String>> {
        let publishable: Vec<&Member> = self.publishable().collect();
        let names: BTreeSet<&str> = publishable.iter().map(|m| m.name.as_str()).collect();
        for m in &publishable {
            for dep in &m.internal_deps {
                if !names.contains(dep.as_str()) {
                    bail!("{} depends on {dep}, which is not publishable", m.name);
                }
            }
        }
        let deps: BTreeMap<&str, &BTreeSet<String>> = publishable
            .iter()
            .map(|m| (m.name.as_str(), &m.internal_deps))
            .collect();
        topo_order(
            &publishable
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>(),
            |name| deps[name].iter().map(String::as_str).collect(),
        )
    }
}

/// Kahn's algorithm, always taking the earliest ready node in `nodes` order. Fails naming
/// the crates of a cycle.
pub fn topo_order<'a>(
    nodes: &[&'a str],
    deps_of: impl Fn(&'a str) -> Vec<&'a str>,
) -> Result<Vec<String>> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < nodes.len() {
        let next = nodes
            .iter()
            .find(|n| !done.contains(**n) && deps_of(n).iter().all(|d| done.contains(d)));
        match next {
            Some(n) => {
                done.insert(n);
                order.push((*n).to_owned());
            }
            None => {
                let stuck: Vec<&str> = nodes
                    .iter()
                    .copied()
                    .filter(|n| !done.contains(n))
                    .collect();
                bail!("dependency cycle among: {}", stuck.join(", "));
            }
        }
    }
    Ok(order)
}

fn read_manifest(path: &Path) -> Result<DocumentMut> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.parse::<DocumentMut>()
        .with_context(|| format!("parsing {}", path.display()))
}

fn read_member(dir: &Path) -> Result<Member> {
    let path = dir.join("Cargo.toml");
    let doc = read_manifest(&path)?;
    let package = doc
        .get("package")
        .and_then(Item::as_table_like)
        .with_context(|| format!("{} has no [package]", path.display()))?;
    let name = package
        .get("name")
        .and_then(Item::as_str)
        .with_context(|| format!("{} has no package.name", path.display()))?
        .to_owned();
    let publish = match package.get("publish") {
        None => true,
        Some(item) => match (item.as_bool(), item.as_array()) {
            (Some(b), _) => b,
            (None, Some(list)) => !list.is_empty(),
            _ => true,
        },
    };
    let workspace_version = package
        .get("version")
        .and_then(Item::as_table_like)
        .and_then(|t| t.get("workspace"))
        .and_then(Item::as_bool)
        == Some(true);
    let workspace_lints = doc
        .get("lints")
        .and_then(Item::as_table_like)
        .and_then(|t| t.get("workspace"))
        .and_then(Item::as_bool)
        == Some(true);
    Ok(Member {
        name,
        dir: dir.to_path_buf(),
        publish,
        workspace_lints,
        workspace_version,
        internal_deps: BTreeSet::new(),
    })
}

fn internal_deps(
    doc: &DocumentMut,
    ws_deps: Option<&Table>,
    members: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut tables: Vec<(&Item, bool)> = Vec::new();
    for (kind, is_dev) in [
        ("dependencies", false),
        ("build-dependencies", false),
        ("dev-dependencies", true),
    ] {
        if let Some(t) = doc.get(kind) {
            tables.push((t, is_dev));
        }
        if let Some(targets) = doc.get("target").and_then(Item::as_table_like) {
            for (_, target) in targets.iter() {
                if let Some(t) = target.as_table_like().and_then(|t| t.get(kind)) {
                    tables.push((t, is_dev));
                }
            }
        }
    }
    for (table, is_dev) in tables {
        let Some(table) = table.as_table_like() else {
            continue;
        };
        for (key, spec) in table.iter() {
            let (name, versioned) = resolve_dep(key, spec, ws_deps);
            if members.contains(&name) && (versioned || !is_dev) {
                out.insert(name);
            }
        }
    }
    out
}

/// The package name a dependency entry refers to, and whether it carries a version.
fn resolve_dep(key: &str, spec: &Item, ws_deps: Option<&Table>) -> (String, bool) {
    let Some(table) = spec.as_table_like() else {
        // `name = "1.0"`: a registry dependency by version.
        return (key.to_owned(), true);
    };
    let inherits = table.get("workspace").and_then(Item::as_bool) == Some(true);
    let source = if inherits {
        ws_deps.and_then(|d| d.get(key)).unwrap_or(spec)
    } else {
        spec
    };
    let Some(source_table) = source.as_table_like() else {
        return (key.to_owned(), source.as_str().is_some());
    };
    let name = table
        .get("package")
        .or_else(|| source_table.get("package"))
        .and_then(Item::as_str)
        .unwrap_or(key)
        .to_owned();
    (name, source_table.contains_key("version"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write a workspace with the given members (`name`, manifest body after [package]).
    pub(crate) fn fixture(root: &Path, ws_extra: &str, members: &[(&str, &str)]) {
        let list: Vec<String> = members.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        fs::write(
            root.join("Cargo.toml"),
            format!(
                "[workspace]\nmembers = [{}]\n\n[workspace.package]\nversion = \"0.1.0\"\n{ws_extra}",
                list.join(", ")
            ),
        )
        .expect("write root manifest");
        for (name, body) in members {
            fs::create_dir_all(root.join(name)).expect("mkdir");
            fs::write(
                root.join(name).join("Cargo.toml"),
                format!("[package]\nname = \"{name}\"\nversion.workspace = true\n{body}"),
            )
            .expect("write member manifest");
        }
    }

    #[test]
    fn order_of_the_real_workspace_starts_with_core() {
        // Read-only: the real manifests are parsed, nothing is written.
        let ws = Workspace::load(&crate::cmd::project_root()).expect("load workspace");
        let order = ws.publish_order().expect("order");
        assert_eq!(order.first().map(String::as_str), Some("hive-cred-core"));
        assert!(
            !order.iter().any(|n| n == "xtask"),
            "xtask is not published"
        );
        for m in ws.publishable() {
            let pos = |n: &str| order.iter().position(|x| x == n).expect("in order");
            for d in &m.internal_deps {
                assert!(pos(d) < pos(&m.name), "{d} must come before {}", m.name);
            }
        }
    }

    #[test]
    fn order_follows_dependencies_not_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Listed backwards on purpose; runtime needs all, local/vault/oauth need core.
        fixture(
            dir.path(),
            "\n[workspace.dependencies]\n\
             hive-cred-core = { path = \"hive-cred-core\", version = \"=0.1.0\" }\n\
             hive-cred-local = { path = \"hive-cred-local\", version = \"=0.1.0\" }\n\
             hive-cred-vault = { path = \"hive-cred-vault\", version = \"=0.1.0\" }\n\
             hive-cred-oauth = { path = \"hive-cred-oauth\", version = \"=0.1.0\" }\n",
            &[
                (
                    "tool",
                    "publish = false\n[dependencies]\nhive-cred-runtime = { path = \"../hive-cred-runtime\" }\n",
                ),
                (
                    "hive-cred-runtime",
                    "[dependencies]\nhive-cred-core.workspace = true\n\
                     local = { workspace = true, package = \"hive-cred-local\", optional = true }\n\
                     [target.'cfg(unix)'.dependencies]\nhive-cred-vault = { workspace = true }\n\
                     [dev-dependencies]\nhive-cred-oauth.workspace = true\n",
                ),
                (
                    "hive-cred-oauth",
                    "[dependencies]\nhive-cred-core = { workspace = true }\n",
                ),
                (
                    "hive-cred-vault",
                    "[dependencies]\nhive-cred-core.workspace = true\n",
                ),
                (
                    "hive-cred-local",
                    "[dependencies]\nhive-cred-core.workspace = true\n\
                     [dev-dependencies]\n# path-only: stripped on publish, no ordering edge\n\
                     hive-cred-vault = { path = \"../hive-cred-vault\" }\n",
                ),
                ("hive-cred-core", "[dev-dependencies]\nserde = \"1\"\n"),
            ],
        );
        let ws = Workspace::load(dir.path()).expect("load");
        let order = ws.publish_order().expect("order");
        assert_eq!(
            order,
            vec![
                "hive-cred-core",
                "hive-cred-oauth",
                "hive-cred-vault",
                "hive-cred-local",
                "hive-cred-runtime"
            ]
        );
        let runtime = ws
            .members
            .iter()
            .find(|m| m.name == "hive-cred-runtime")
            .expect("runtime");
        assert_eq!(
            runtime
                .internal_deps
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            vec![
                "hive-cred-core",
                "hive-cred-local",
                "hive-cred-oauth",
                "hive-cred-vault"
            ]
        );
    }

    #[test]
    fn design_order_is_core_local_vault_oauth_runtime() {
        let nodes = [
            "hive-cred-core",
            "hive-cred-local",
            "hive-cred-vault",
            "hive-cred-oauth",
            "hive-cred-runtime",
        ];
        let order = topo_order(&nodes, |n| match n {
            "hive-cred-core" => vec![],
            "hive-cred-runtime" => nodes[..4].to_vec(),
            _ => vec!["hive-cred-core"],
        })
        .expect("order");
        assert_eq!(order, nodes);
    }

    #[test]
    fn cycles_are_reported() {
        let err = topo_order(&["a", "b", "c"], |n| match n {
            "a" => vec!["b"],
            "b" => vec!["a"],
            _ => vec![],
        })
        .expect_err("cycle");
        assert_eq!(err.to_string(), "dependency cycle among: a, b");
    }

    #[test]
    fn unpublishable_dependency_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture(
            dir.path(),
            "",
            &[
                ("helper", "publish = false\n"),
                (
                    "lib",
                    "[dependencies]\nhelper = { path = \"../helper\", version = \"0.1\" }\n",
                ),
            ],
        );
        let err = Workspace::load(dir.path())
            .expect("load")
            .publish_order()
            .expect_err("helper is not publishable");
        assert_eq!(
            err.to_string(),
            "lib depends on helper, which is not publishable"
        );
    }
}
