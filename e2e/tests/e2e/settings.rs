//! The settings each service declares (`config::SETTINGS`, read through
//! `platform::settings::Env`) are the ones the documentation shows and the
//! only ones the operator sets. `UPDATE_DOCS=1 cargo nextest run -p e2e
//! settings` rewrites the generated tables.

use std::path::{Path, PathBuf};

use platform::settings::{SHARED, Setting, flatten, markdown_table};

fn shared() -> Vec<&'static Setting> {
    flatten(SHARED)
}

type Declared = &'static [&'static [&'static Setting]];

const SERVICES: [(&str, Declared); 6] = [
    ("gateway", gateway::config::SETTINGS),
    ("inventory", inventory::config::SETTINGS),
    ("order", order::config::SETTINGS),
    ("user", user::config::SETTINGS),
    ("producer", producer::config::SETTINGS),
    ("consumer", consumer::config::SETTINGS),
];

const BEGIN: &str = "<!-- settings: generated from the services' config::SETTINGS; UPDATE_DOCS=1 cargo nextest run -p e2e -E 'test(/^settings::/)' rewrites it -->";
const END: &str = "<!-- /settings -->";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn declared(service: &str) -> Vec<&'static Setting> {
    let (_, groups) = SERVICES
        .iter()
        .find(|(name, _)| *name == service)
        .unwrap_or_else(|| panic!("no service {service}"));
    flatten(groups)
}

fn own(service: &str) -> Vec<&'static Setting> {
    declared(service)
        .into_iter()
        .filter(|s| !shared().iter().any(|shared| shared.name == s.name))
        .collect()
}

fn readers(setting: &Setting) -> Vec<&'static str> {
    SERVICES
        .iter()
        .filter(|(service, _)| declared(service).iter().any(|s| s.name == setting.name))
        .map(|(service, _)| *service)
        .collect()
}

/// docs/configuration.md's table: every shared setting and who reads it.
fn shared_table() -> String {
    let mut out = String::from("| variable | default | read by | meaning |\n|---|---|---|---|\n");
    for s in shared() {
        let by = readers(s);
        let by = if by.len() == SERVICES.len() {
            "all".to_owned()
        } else {
            by.join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {by} | {} |\n",
            s.name,
            s.default_text(),
            s.doc
        ));
    }
    out
}

/// Replaces (`UPDATE_DOCS=1`) or compares the generated block of `path`.
fn check_block(path: &Path, generated: &str, stale: &mut Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = text.find(BEGIN).unwrap_or_else(|| {
        panic!(
            "{} has no generated settings block ({BEGIN})",
            path.display()
        )
    });
    let body = start + BEGIN.len();
    let end = body
        + text[body..]
            .find(END)
            .unwrap_or_else(|| panic!("{}: {END} is missing", path.display()));
    let wanted = format!("\n{generated}");
    if text[body..end] == wanted {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{wanted}{}", &text[..body], &text[end..]);
        std::fs::write(path, updated).expect("write the documentation");
    } else {
        stale.push(path.display().to_string());
    }
}

#[test]
fn the_settings_tables_are_generated_from_the_declarations() {
    let mut stale = Vec::new();
    check_block(
        &root().join("docs/configuration.md"),
        &shared_table(),
        &mut stale,
    );
    for (service, _) in SERVICES {
        let own = own(service);
        if own.is_empty() {
            continue;
        }
        let readme = root().join(format!("services/{service}/README.md"));
        check_block(&readme, &markdown_table(&own), &mut stale);
    }
    assert!(
        stale.is_empty(),
        "the settings tables of {stale:?} differ from the declarations: run UPDATE_DOCS=1 cargo nextest run -p e2e -E 'test(/^settings::/)'"
    );
}

#[test]
fn every_setting_is_declared_once_and_read_by_a_service() {
    let mut names: Vec<&str> = SERVICES
        .iter()
        .flat_map(|(service, _)| own(service))
        .map(|s| s.name)
        .chain(shared().iter().map(|s| s.name))
        .collect();
    names.sort();
    let mut twice = names.clone();
    twice.dedup();
    assert_eq!(names, twice, "a setting is declared by two services");
    for s in shared() {
        assert!(
            !readers(s).is_empty(),
            "{} is declared but no service reads it",
            s.name
        );
    }
}

#[test]
fn the_operator_sets_only_what_each_service_reads() {
    let sample = std::fs::read_to_string(root().join("k8s/samples/ecommerce-stack.yaml"))
        .expect("the sample stack");
    let stack: operator::EcommerceStack = serde_yaml::from_str(&sample).expect("a stack");
    let all: Vec<&str> = SERVICES
        .iter()
        .flat_map(|(service, _)| declared(service))
        .map(|s| s.name)
        .collect();
    for key in operator::resources::shared_settings(&stack).keys() {
        assert!(
            all.contains(&key.as_str()),
            "the operator's ConfigMap sets {key}, which no service reads"
        );
    }
    for service in operator::services::Service::ALL {
        let reads: Vec<&str> = declared(service.name()).iter().map(|s| s.name).collect();
        for var in operator::resources::container_env(&stack, service) {
            assert!(
                reads.contains(&var.name.as_str()),
                "the operator gives {} {}, which it does not read",
                service.name(),
                var.name
            );
        }
    }
}
