//! The binary's handling of configuration: one clear line and exit status 2
//! for bad settings, host and port for unreachable servers, no secrets printed.

use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_notification-scheduler");

/// Runs the binary with a clean environment plus `env`.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BINARY);
    command.env_clear().args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_config_error(output: &Output, expected: &[&str]) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(2), "stderr: {text}");
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
    for part in expected {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

#[test]
fn a_missing_database_url_names_the_setting_and_what_is_expected() {
    let output = run(&["migrate"], &[]);
    assert_config_error(
        &output,
        &["DATABASE_URL", "--database-url", "postgresql://"],
    );
}

#[test]
fn a_bad_database_url_is_quoted_with_the_password_masked() {
    let output = run(
        &["migrate"],
        &[(
            "DATABASE_URL",
            "postgresql+psycopg2://app:hunter2@db:5432/app",
        )],
    );
    assert_config_error(&output, &["DATABASE_URL", "app:****@db", "driver"]);
    assert!(!stderr(&output).contains("hunter2"));
}

#[test]
fn a_database_url_asking_for_a_standby_is_a_configuration_error_that_names_the_value() {
    let output = run(
        &["migrate"],
        &[(
            "DATABASE_URL",
            "postgresql://app:hunter2@pg1:5432,pg2:5432/app?target_session_attrs=prefer-standby",
        )],
    );
    assert_config_error(
        &output,
        &[
            "DATABASE_URL",
            "target_session_attrs=prefer-standby",
            "use read-write",
        ],
    );
    assert!(!stderr(&output).contains("hunter2"));
}

#[test]
fn a_flag_wins_over_the_environment() {
    let output = run(
        &["migrate", "--database-connect-timeout", "soon"],
        &[
            ("DATABASE_URL", "postgresql://app@127.0.0.1:1/app"),
            ("DATABASE_CONNECT_TIMEOUT", "1s"),
        ],
    );
    assert_config_error(&output, &["DATABASE_CONNECT_TIMEOUT", "'soon'", "unit"]);
}

#[test]
fn bad_durations_and_enumerations_name_the_setting_and_the_value() {
    let output = run(
        &["migrate"],
        &[
            ("DATABASE_URL", "postgresql://app@127.0.0.1:1/app"),
            ("DATABASE_CONNECT_TIMEOUT", "5"),
        ],
    );
    assert_config_error(&output, &["DATABASE_CONNECT_TIMEOUT", "'5'", "e.g. 30s"]);

    let output = run(
        &["migrate"],
        &[
            ("DATABASE_URL", "postgresql://app@127.0.0.1:1/app"),
            ("LOG_FORMAT", "xml"),
        ],
    );
    assert_config_error(&output, &["LOG_FORMAT", "'xml'", "text, json"]);
}

#[test]
fn invalid_rust_log_directives_are_a_configuration_error() {
    let output = run(
        &["migrate"],
        &[
            ("DATABASE_URL", "postgresql://app@127.0.0.1:1/app"),
            ("RUST_LOG", "info,[[[="),
        ],
    );
    assert_config_error(&output, &["RUST_LOG", "[[[="]);
}

#[test]
fn an_unreachable_database_is_reported_by_host_and_port_without_secrets() {
    let output = run(
        &["migrate"],
        &[
            ("DATABASE_URL", "postgresql://app:hunter2@127.0.0.1:1/app"),
            ("DATABASE_CONNECT_TIMEOUT", "2s"),
        ],
    );
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("cannot reach PostgreSQL at 127.0.0.1:1"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn help_documents_every_setting_with_its_variable_and_default() {
    let output = run(&["migrate", "--help"], &[]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "DATABASE_URL",
        "DATABASE_CONNECT_TIMEOUT",
        "[default: 5s]",
        "LOG_LEVEL",
        "LOG_FORMAT",
    ] {
        assert!(help.contains(expected), "{expected} missing from:\n{help}");
    }
}

#[test]
fn help_never_shows_secret_values_from_the_environment() {
    let output = run(
        &["migrate", "--help"],
        &[("DATABASE_URL", "postgresql://app:hunter2@db/app")],
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("hunter2"));
}

#[test]
fn the_api_refuses_to_start_without_a_token_unless_told_it_is_insecure() {
    let url = ("DATABASE_URL", "postgresql://app@127.0.0.1:1/app");
    let output = run(&["api"], &[url]);
    assert_config_error(&output, &["API_TOKEN", "--insecure-no-auth"]);
    let output = run(&["api"], &[url, ("API_TOKEN", "short")]);
    assert_config_error(&output, &["API_TOKEN", "16"]);
    assert!(!stderr(&output).contains("short\""));
    let output = run(
        &[
            "api",
            "--insecure-no-auth",
            "--database-connect-timeout",
            "1s",
        ],
        &[url],
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "passes configuration, fails on the database"
    );
    assert!(stderr(&output).contains("127.0.0.1:1"));
}

#[test]
fn the_daemon_rejects_a_claim_timeout_shorter_than_the_confirm_timeout() {
    let output = run(
        &[
            "daemon",
            "--claim-timeout",
            "5s",
            "--rabbitmq-confirm-timeout",
            "10s",
        ],
        &[
            ("DATABASE_URL", "postgresql://app@127.0.0.1:1/app"),
            ("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
        ],
    );
    assert_config_error(&output, &["CLAIM_TIMEOUT", "RABBITMQ_CONFIRM_TIMEOUT"]);
}

#[test]
fn bad_default_reminder_minutes_are_named() {
    let output = run(
        &["api", "--insecure-no-auth"],
        &[
            ("DATABASE_URL", "postgresql://app@127.0.0.1:1/app"),
            ("DEFAULT_REMINDER_MINUTES", "60,60"),
        ],
    );
    assert_config_error(&output, &["DEFAULT_REMINDER_MINUTES", "repeats 60"]);
}

#[test]
fn the_configuration_reference_matches_the_command_line() {
    let output = run(&["config-reference"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let generated = String::from_utf8(output.stdout).expect("UTF-8");
    let documented = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md exists");
    assert!(
        generated == documented,
        "docs/configuration.md is out of date; regenerate it with \
         `cargo run -- config-reference > docs/configuration.md`"
    );
    for variable in ["DATABASE_URL", "RETENTION", "API_TOKEN", "HEALTH_ADDR"] {
        assert!(documented.contains(&format!("`{variable}`")), "{variable}");
    }
}
