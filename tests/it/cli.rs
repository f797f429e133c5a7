//! The binary as an operator meets it: text logs in a file, a pipe or a container's log
//! carry no terminal colour codes; shell completions and a man page are one command away.

use std::process::Command;

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let output = Command::new(env!("CARGO_BIN_EXE_cache-layer"))
        .arg("stats")
        .env_remove("CACHE_LAYER_CONFIG")
        .env("RUST_LOG", "info")
        .env("REDIS_PORT", cache_layer_testkit::free_port().to_string())
        .env("CACHE_LAYER__REDIS__CONNECT_TIMEOUT_MS", "200")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("ERROR"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a pipe: {stderr:?}"
    );
}

fn run(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_cache-layer"))
        .args(args)
        .env_remove("CACHE_LAYER_CONFIG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        assert!(script.contains("check-config"), "{shell}: {script}");
    }
    let man = run(&["man"]);
    assert!(man.contains(".TH cache-layer 1"), "{man}");
    for command in ["run", "stats", "sweep", "check\\-config", "produce"] {
        assert!(man.contains(command), "the man page lacks {command}");
    }
}

#[test]
fn a_closed_stdout_ends_a_command_quietly_with_the_sigpipe_status() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    // A pipe whose reader is gone before the command writes, as `| head` leaves it.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_cache-layer"))
        .arg("check-config")
        .env_remove("CACHE_LAYER_CONFIG")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.signal(),
        Some(13),
        "{:?} {stderr}",
        output.status
    );
    assert!(stderr.is_empty(), "{stderr}");
}
