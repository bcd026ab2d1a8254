//! Django over the real binary: its migrations (creating tables, then altering them,
//! which reads the schema back through `pg_catalog`) and its ORM, through psycopg 3.
//! `.ci/run` installs both from PyPI into `FLOTILLA_PYDEPS`.

mod support;

use std::path::Path;
use std::process::Command;

use support::Server;

/// Runs `python3 -m django <args>` (or a script) in `project`, against `server`; its
/// output, or a failure with it.
fn python(project: &Path, server: &Server, args: &[&str]) -> String {
    let deps = std::env::var("FLOTILLA_PYDEPS").unwrap_or_default();
    let out = Command::new("python3")
        .args(args)
        .current_dir(project)
        .env("PYTHONPATH", format!("{deps}:{}", project.display()))
        .env("DJANGO_SETTINGS_MODULE", "settings")
        .env("FLOTILLA_PORT", server.sql_port.to_string())
        .output()
        .expect("run python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python3 {args:?} failed:\n{text}");
    text
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn django_migrates_and_its_orm_works() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&data.path().join("db"), &[]);
    let project = data.path().join("project");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/django"),
        &project,
    );
    let has_django = python(
        &project,
        &server,
        &["-c", "import django, psycopg; print(django.VERSION[0])"],
    );
    assert!(
        has_django.trim().parse::<u32>().is_ok_and(|v| v >= 4),
        "Django 4 or later is needed (bash .ci/run installs it): {has_django}"
    );
    python(
        &project,
        &server,
        &["-m", "django", "makemigrations", "shop"],
    );
    let migrated = python(&project, &server, &["-m", "django", "migrate"]);
    assert!(
        migrated.contains("Applying shop.0001_initial... OK"),
        "{migrated}"
    );
    assert!(
        migrated.contains("Applying auth.0012_alter_user_first_name_max_length... OK"),
        "{migrated}"
    );
    let crud = python(&project, &server, &["crud.py"]);
    assert!(crud.trim_end().ends_with("ok"), "{crud}");

    // The second models: Django finds the constraints and indexes to drop by reading
    // them back (pg_constraint, pg_index), widens a column, adds a foreign key column.
    std::fs::copy(project.join("models_v2.py"), project.join("shop/models.py")).unwrap();
    python(
        &project,
        &server,
        &["-m", "django", "makemigrations", "shop"],
    );
    let migrated = python(&project, &server, &["-m", "django", "migrate", "shop"]);
    assert!(
        migrated.contains("0002_") && migrated.contains("... OK"),
        "{migrated}"
    );
    let after = python(&project, &server, &["after_v2.py"]);
    assert!(after.trim_end().ends_with("ok"), "{after}");
}
